// The CP-ABE policy language of crates/abe/src/policy.rs in TypeScript: parsing (same grammar,
// same limits), the canonical form (a ciphertext's policy must be canonical), the leaves (one
// per span-program row), satisfaction, the minimal satisfying rows of decryption and the
// Lewko-Waters span program of encryption.

export const MAX_POLICY_LEN = 4096;
export const MAX_POLICY_ATTRIBUTES = 64;
export const MAX_NESTING_DEPTH = 16;
export const MAX_ATTRIBUTE_LEN = 128;

export type PolicyNode =
  | { readonly kind: "attribute"; readonly attribute: string }
  | { readonly kind: "and"; readonly children: readonly PolicyNode[] }
  | { readonly kind: "or"; readonly children: readonly PolicyNode[] };

export class PolicyError extends Error {
  constructor(
    readonly position: number,
    message: string,
  ) {
    super(`the policy is invalid at byte ${position}: ${message}`);
    this.name = "PolicyError";
  }
}

const NAMESPACE_FIRST = /^[a-z]$/;
const NAMESPACE_CHAR = /^[a-z0-9_-]$/;
const VALUE_CHAR = /^[A-Za-z0-9_.:-]$/;
const WORD_CHAR = /^[A-Za-z0-9_.:-]$/;

/** The attribute syntax: `namespace:value`, ASCII, at most 128 bytes. Returns a reason or null. */
export function attributeProblem(attribute: string): string | null {
  if (attribute.length === 0) return "an attribute is empty";
  if (attribute.length > MAX_ATTRIBUTE_LEN) return `an attribute is longer than ${MAX_ATTRIBUTE_LEN} bytes`;
  const colon = attribute.indexOf(":");
  if (colon <= 0) return `the attribute "${attribute}" has no namespace (write namespace:value)`;
  for (let i = 0; i < attribute.length; i++) {
    const c = attribute[i]!;
    if (i < colon) {
      if (!(i === 0 ? NAMESPACE_FIRST : NAMESPACE_CHAR).test(c)) return `"${c}" is not allowed in an attribute namespace`;
    } else if (i > colon && !VALUE_CHAR.test(c)) {
      return `"${c}" is not allowed in an attribute value`;
    }
  }
  if (colon + 1 === attribute.length) return `the attribute "${attribute}" has an empty value`;
  return null;
}

export class Policy {
  private constructor(
    readonly root: PolicyNode,
    readonly leafCount: number,
  ) {}

  /** Parses a policy (grammar and limits of crates/abe/src/policy.rs). */
  static parse(text: string): Policy {
    if (utf8Length(text) > MAX_POLICY_LEN) throw new PolicyError(MAX_POLICY_LEN, `longer than ${MAX_POLICY_LEN} bytes`);
    const parser = new Parser(text);
    const root = parser.expr(0, null);
    const policy = new Policy(root, parser.leaves);
    if (policy.canonical().length > MAX_POLICY_LEN) throw new PolicyError(0, "the canonical form is too long");
    return policy;
  }

  canonical(): string {
    return write(this.root, true);
  }

  /** Every attribute occurrence, left to right (one per span-program row). */
  leaves(): string[] {
    const out: string[] = [];
    collect(this.root, out);
    return out;
  }

  /** The distinct attributes, in order of first appearance. */
  attributes(): string[] {
    return [...new Set(this.leaves())];
  }

  isSatisfiedBy(attributes: Iterable<string>): boolean {
    const set = new Set(attributes);
    return satisfied(this.root, (a) => set.has(a));
  }

  /** Leaf indices of a minimal satisfying choice (coefficient 1 each), or null. */
  reconstructionRows(has: (attribute: string) => boolean): number[] | null {
    return selectRows(this.root, 0, has);
  }

  /** The Lewko-Waters span program: per leaf, sparse entries (0-based column, ±1); and the column count. */
  spanProgram(): { rows: { attribute: string; entries: [number, 1 | -1][] }[]; columns: number } {
    const program = { rows: [] as { attribute: string; entries: [number, 1 | -1][] }[], columns: 1 };
    lewkoWaters(this.root, [[0, 1]], program);
    return program;
  }
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

class Parser {
  pos = 0;
  leaves = 0;

  constructor(private readonly text: string) {
    // The grammar is ASCII; a non-ASCII character fails as an unexpected character, and byte
    // offsets equal string offsets up to it.
  }

  private peek(): string | undefined {
    return this.text[this.pos];
  }

  private skip(): void {
    while (this.peek() === " " || this.peek() === "\t" || this.peek() === "\r" || this.peek() === "\n") this.pos++;
  }

  private word(): string {
    const start = this.pos;
    while (this.peek() !== undefined && WORD_CHAR.test(this.peek()!)) this.pos++;
    return this.text.slice(start, this.pos);
  }

  expr(depth: number, open: number | null): PolicyNode {
    const operands = [this.operand(depth)];
    let operator: "and" | "or" | null = null;
    for (;;) {
      this.skip();
      const start = this.pos;
      const c = this.peek();
      if (c === undefined) {
        if (open !== null) throw new PolicyError(open, "this parenthesis is never closed");
        break;
      }
      if (c === ")") {
        if (open !== null) break;
        throw new PolicyError(start, "a closing parenthesis without an opening one");
      }
      if (WORD_CHAR.test(c)) {
        const word = this.word();
        const op = keyword(word);
        if (op === null) throw new PolicyError(start, `expected "and", "or" or the end, found "${word.slice(0, 32)}"`);
        if (operator !== null && operator !== op) {
          throw new PolicyError(start, `"and" and "or" are mixed without parentheses`);
        }
        operator = op;
        operands.push(this.operand(depth));
        continue;
      }
      throw new PolicyError(start, `expected "and", "or" or ${open === null ? "the end" : '")"'}, found "${c}"`);
    }
    if (operator === null) return operands[0]!;
    const flat: PolicyNode[] = [];
    for (const operand of operands) {
      if (operand.kind === operator) flat.push(...operand.children);
      else flat.push(operand);
    }
    return { kind: operator, children: flat };
  }

  private operand(depth: number): PolicyNode {
    this.skip();
    const start = this.pos;
    const c = this.peek();
    if (c === '"') return this.attribute();
    if (c === "(") {
      if (depth >= MAX_NESTING_DEPTH) throw new PolicyError(start, `nested deeper than ${MAX_NESTING_DEPTH} levels`);
      this.pos++;
      const node = this.expr(depth + 1, start);
      this.pos++;
      return node;
    }
    if (c === undefined) throw new PolicyError(start, "expected an attribute or \"(\", found the end");
    if (WORD_CHAR.test(c)) {
      const word = this.word();
      if (keyword(word) !== null) throw new PolicyError(start, `expected an attribute or "(", found "${word}"`);
      throw new PolicyError(start, `attributes must be quoted: "${word.slice(0, 32)}"`);
    }
    throw new PolicyError(start, `expected an attribute or "(", found "${c}"`);
  }

  private attribute(): PolicyNode {
    const quote = this.pos;
    const end = this.text.indexOf('"', quote + 1);
    if (end < 0) throw new PolicyError(quote, "an attribute's quote is never closed");
    const attribute = this.text.slice(quote + 1, end);
    const problem = attributeProblem(attribute);
    if (problem !== null) throw new PolicyError(quote, problem);
    if (this.leaves >= MAX_POLICY_ATTRIBUTES) throw new PolicyError(quote, `more than ${MAX_POLICY_ATTRIBUTES} attributes`);
    this.leaves++;
    this.pos = end + 1;
    return { kind: "attribute", attribute };
  }
}

function keyword(word: string): "and" | "or" | null {
  const lower = word.toLowerCase();
  return lower === "and" ? "and" : lower === "or" ? "or" : null;
}

function write(node: PolicyNode, top: boolean): string {
  if (node.kind === "attribute") return `"${node.attribute}"`;
  const inner = node.children.map((c) => write(c, false)).join(` ${node.kind} `);
  return top ? inner : `(${inner})`;
}

function collect(node: PolicyNode, out: string[]): void {
  if (node.kind === "attribute") out.push(node.attribute);
  else for (const child of node.children) collect(child, out);
}

function count(node: PolicyNode): number {
  return node.kind === "attribute" ? 1 : node.children.reduce((n, c) => n + count(c), 0);
}

function satisfied(node: PolicyNode, has: (a: string) => boolean): boolean {
  if (node.kind === "attribute") return has(node.attribute);
  if (node.kind === "and") return node.children.every((c) => satisfied(c, has));
  return node.children.some((c) => satisfied(c, has));
}

function selectRows(node: PolicyNode, first: number, has: (a: string) => boolean): number[] | null {
  if (node.kind === "attribute") return has(node.attribute) ? [first] : null;
  let base = first;
  if (node.kind === "and") {
    const rows: number[] = [];
    for (const child of node.children) {
      const chosen = selectRows(child, base, has);
      if (chosen === null) return null;
      rows.push(...chosen);
      base += count(child);
    }
    return rows;
  }
  let best: number[] | null = null;
  for (const child of node.children) {
    const chosen = selectRows(child, base, has);
    if (chosen !== null && (best === null || chosen.length < best.length)) best = chosen;
    base += count(child);
  }
  return best;
}

function lewkoWaters(
  node: PolicyNode,
  vector: [number, 1 | -1][],
  program: { rows: { attribute: string; entries: [number, 1 | -1][] }[]; columns: number },
): void {
  if (node.kind === "attribute") {
    program.rows.push({ attribute: node.attribute, entries: vector.map(([c, s]) => [c, s]) });
    return;
  }
  if (node.kind === "or") {
    for (const child of node.children) lewkoWaters(child, vector, program);
    return;
  }
  // An n-ary AND as the right-nested binary AND: child 1 gets v + x1, child i gets -x(i-1) + x(i),
  // the last -x(n-1).
  const firstNew = program.columns;
  const n = node.children.length;
  program.columns += Math.max(0, n - 1);
  node.children.forEach((child, i) => {
    const v: [number, 1 | -1][] = i === 0 ? vector.map(([c, s]) => [c, s]) : [[firstNew + i - 1, -1]];
    if (i + 1 < n) v.push([firstNew + i, 1]);
    lewkoWaters(child, v, program);
  });
}
