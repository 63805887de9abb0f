// The records client's local checks: FHIR content of the declared kind (as the SDK's check_fhir),
// before anything is encrypted or sent.
import { describe, expect, it } from "vitest";

import { fhirProblem, RECORD_KINDS } from "./records";

describe("fhirProblem", () => {
  it("accepts FHIR JSON of the declared kind", () => {
    for (const kind of RECORD_KINDS) expect(fhirProblem(kind, JSON.stringify({ resourceType: kind }))).toBeNull();
  });

  it("refuses other kinds, non-JSON, and JSON without a resourceType", () => {
    expect(fhirProblem("Condition", '{"resourceType":"Observation"}')).toMatch(/is a FHIR Observation, not a Condition/);
    expect(fhirProblem("Observation", "not json")).toMatch(/not JSON/);
    expect(fhirProblem("Observation", '["resourceType"]')).toMatch(/no "resourceType"/);
    expect(fhirProblem("Observation", '{"resourceType":7}')).toMatch(/no "resourceType"/);
  });
});
