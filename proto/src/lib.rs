//! caremesh's gRPC API: the protobuf messages and the tonic clients and servers of all five
//! services, generated at build time from `proto/caremesh/**/*.proto` with protox (no system
//! `protoc` needed).
//!
//! One module per protobuf package:
//!
//! | module | package | services |
//! |---|---|---|
//! | [`auth::v1`] | `caremesh.auth.v1` | `AuthService`, `AuthAdminService`, `AuthInternalService` |
//! | [`messaging::v1`] | `caremesh.messaging.v1` | `KeyDirectoryService`, `MessagingService`, `MessagingInternalService` |
//! | [`abe::v1`] | `caremesh.abe.v1` | `AbeService` |
//! | [`records::v1`] | `caremesh.records.v1` | `RecordsService` |
//! | [`audit::v1`] | `caremesh.audit.v1` | `AuditService`, `AuditInternalService` |
//!
//! Services named `...InternalService` are service-to-service only: their callers authenticate with
//! a mesh certificate and each RPC's comment names the SPIFFE identities allowed to call it. Every
//! service emits [`audit::v1::AuditEvent`]s and ships them with
//! [`audit::v1::audit_internal_service_client::AuditInternalServiceClient`].
//!
//! Generated clients and servers use [`codec::CaremeshCodec`]: a request that does not decode is
//! INVALID_ARGUMENT.
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set (with comments and the imported
//! well-known types) for gRPC server reflection; [`SERVICE_NAMES`] lists every service's fully
//! qualified name (for reflection, health registration and the mTLS allowlists).

pub mod codec;

/// Declares `pub mod $name { pub mod v1 { <generated code of $package> } }`.
macro_rules! generated {
    ($(#[$meta:meta])* $name:ident, $package:literal) => {
        $(#[$meta])*
        pub mod $name {
            #[doc = concat!("Package `", $package, "`.")]
            // tonic-prost-build output: the workspace's no-panic lints are for hand-written code
            // (codegen changes must not break the build), oneofs with one big variant are normal,
            // and doc comments come from the .proto files as written.
            #[allow(
                clippy::unwrap_used,
                clippy::expect_used,
                clippy::panic,
                clippy::indexing_slicing,
                clippy::large_enum_variant,
                clippy::doc_lazy_continuation,
                clippy::doc_overindented_list_items
            )]
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    };
}

generated!(
    /// auth-svc: accounts, login with MFA, sessions and tokens, admin, user attributes.
    auth,
    "caremesh.auth.v1"
);
generated!(
    /// messaging-svc: the public-key directory and end-to-end encrypted messages.
    messaging,
    "caremesh.messaging.v1"
);
generated!(
    /// abe-authority-svc: ABE public parameters, user keys, policy validation, emergency access.
    abe,
    "caremesh.abe.v1"
);
generated!(
    /// records-svc: patient records encrypted under ABE policies.
    records,
    "caremesh.records.v1"
);
generated!(
    /// audit-svc: the audit event, the tamper-evident log, queries, proofs and alerts.
    audit,
    "caremesh.audit.v1"
);

/// The encoded `google.protobuf.FileDescriptorSet` of every caremesh `.proto` file and the
/// well-known types they import, with source info (comments). Register it with
/// `tonic_reflection` so grpcurl can list and describe everything.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/caremesh_descriptor.bin"));

/// The fully qualified name of every caremesh gRPC service (a unit test keeps this in sync with
/// [`FILE_DESCRIPTOR_SET`]).
pub const SERVICE_NAMES: &[&str] = &[
    "caremesh.auth.v1.AuthService",
    "caremesh.auth.v1.AuthAdminService",
    "caremesh.auth.v1.AuthInternalService",
    "caremesh.messaging.v1.KeyDirectoryService",
    "caremesh.messaging.v1.MessagingService",
    "caremesh.messaging.v1.MessagingInternalService",
    "caremesh.abe.v1.AbeService",
    "caremesh.records.v1.RecordsService",
    "caremesh.audit.v1.AuditService",
    "caremesh.audit.v1.AuditInternalService",
];

#[cfg(test)]
mod tests {
    //! Checks the API against the descriptor set it was built from: the service list cannot drift,
    //! and buf's STANDARD naming rules plus "everything is documented" hold even where `buf` is not
    //! installed.

    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message as _;
    use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

    use super::{FILE_DESCRIPTOR_SET, SERVICE_NAMES};

    // Field numbers in descriptor.proto, for source-info paths.
    const FILE_MESSAGE_TYPE: i32 = 4;
    const FILE_ENUM_TYPE: i32 = 5;
    const FILE_SERVICE: i32 = 6;
    const MESSAGE_FIELD: i32 = 2;
    const MESSAGE_NESTED_TYPE: i32 = 3;
    const MESSAGE_ENUM_TYPE: i32 = 4;
    const MESSAGE_ONEOF_DECL: i32 = 8;
    const ENUM_VALUE: i32 = 2;
    const SERVICE_METHOD: i32 = 2;

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
    }

    /// The caremesh files (the set also holds the imported well-known types).
    fn caremesh_files() -> Vec<FileDescriptorProto> {
        let files: Vec<_> = descriptor_set()
            .file
            .into_iter()
            .filter(|f| f.package().starts_with("caremesh."))
            .collect();
        assert!(!files.is_empty(), "no caremesh files in the descriptor set");
        files
    }

    fn index(i: usize) -> i32 {
        i32::try_from(i).unwrap()
    }

    fn is_lower_snake(s: &str) -> bool {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !s.contains("__")
            && !s.ends_with('_')
    }

    fn is_upper_snake(s: &str) -> bool {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !s.contains("__")
            && !s.ends_with('_')
    }

    fn is_pascal(s: &str) -> bool {
        s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
    }

    /// `AuditAction` -> `AUDIT_ACTION`.
    fn upper_snake(pascal: &str) -> String {
        let mut out = String::new();
        for (i, c) in pascal.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    #[test]
    fn service_names_match_the_descriptor_set_exactly() {
        let listed: BTreeSet<&str> = SERVICE_NAMES.iter().copied().collect();
        assert_eq!(listed.len(), SERVICE_NAMES.len(), "SERVICE_NAMES has duplicates");

        let mut in_descriptor = BTreeSet::new();
        for file in descriptor_set().file {
            for service in &file.service {
                in_descriptor.insert(format!("{}.{}", file.package(), service.name()));
            }
        }
        let listed: BTreeSet<String> = listed.into_iter().map(str::to_owned).collect();
        assert_eq!(listed, in_descriptor, "SERVICE_NAMES differs from the .proto files");
    }

    #[test]
    fn packages_are_versioned_and_match_their_directories() {
        let expected: BTreeSet<&str> = [
            "caremesh.auth.v1",
            "caremesh.messaging.v1",
            "caremesh.abe.v1",
            "caremesh.records.v1",
            "caremesh.audit.v1",
        ]
        .into_iter()
        .collect();
        let mut seen = BTreeSet::new();
        for file in caremesh_files() {
            let package = file.package().to_owned();
            let dir = package.replace('.', "/");
            let name = file.name();
            assert!(name.starts_with(&format!("{dir}/")), "{name} is not under {dir}/");
            let base = name.rsplit('/').next().unwrap().trim_end_matches(".proto");
            assert!(is_lower_snake(base), "file name {name} is not lower_snake_case");
            assert_eq!(file.syntax(), "proto3", "{name}");
            seen.insert(package);
        }
        let seen: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn rpcs_follow_buf_standard_naming() {
        let mut used: BTreeMap<String, String> = BTreeMap::new();
        for file in caremesh_files() {
            let package = file.package();
            for service in &file.service {
                let service_name = service.name();
                assert!(
                    is_pascal(service_name) && service_name.ends_with("Service"),
                    "service {service_name} must be PascalCase and end with Service"
                );
                for method in &service.method {
                    let rpc = method.name();
                    assert!(is_pascal(rpc), "{service_name}.{rpc} is not PascalCase");
                    let request = format!(".{package}.{rpc}Request");
                    let response = format!(".{package}.{rpc}Response");
                    assert_eq!(method.input_type(), request, "{service_name}.{rpc} request");
                    assert_eq!(method.output_type(), response, "{service_name}.{rpc} response");
                    for ty in [request, response] {
                        let at = format!("{package}.{service_name}.{rpc}");
                        if let Some(previous) = used.insert(ty.clone(), at.clone()) {
                            panic!("{ty} is used by both {previous} and {at}");
                        }
                    }
                }
            }
        }
    }

    /// The oneof protoc makes up for a proto3 `optional` field (named `_<field>`).
    fn is_synthetic_oneof(m: &DescriptorProto, oneof: usize) -> bool {
        m.field
            .iter()
            .any(|f| f.proto3_optional() && f.oneof_index.is_some_and(|o| o == index(oneof)))
    }

    fn check_enum(scope: &str, e: &EnumDescriptorProto) {
        let name = e.name();
        assert!(is_pascal(name), "enum {scope}{name} is not PascalCase");
        let prefix = format!("{}_", upper_snake(name));
        let first = e.value.first().unwrap_or_else(|| panic!("enum {name} is empty"));
        assert_eq!(first.number(), 0, "enum {name}: first value must be 0");
        assert_eq!(first.name(), format!("{prefix}UNSPECIFIED"), "enum {name}: zero value");
        for value in &e.value {
            let v = value.name();
            assert!(is_upper_snake(v), "{name}.{v} is not UPPER_SNAKE_CASE");
            assert!(v.starts_with(&prefix), "{name}.{v} must start with {prefix}");
        }
        assert!(
            e.options.as_ref().is_none_or(|o| !o.allow_alias()),
            "{name} allows aliases"
        );
    }

    fn check_message(scope: &str, m: &DescriptorProto) {
        let name = m.name();
        assert!(is_pascal(name), "message {scope}{name} is not PascalCase");
        for field in &m.field {
            assert!(
                is_lower_snake(field.name()),
                "{name}.{} is not lower_snake_case",
                field.name()
            );
        }
        for (i, oneof) in m.oneof_decl.iter().enumerate() {
            if is_synthetic_oneof(m, i) {
                continue;
            }
            assert!(
                is_lower_snake(oneof.name()),
                "oneof {name}.{} is not lower_snake_case",
                oneof.name()
            );
        }
        let scope = format!("{scope}{name}.");
        for nested in &m.nested_type {
            // Synthetic map entry messages are named by protoc, not by us.
            if !nested.options.as_ref().is_some_and(|o| o.map_entry()) {
                check_message(&scope, nested);
            }
        }
        for e in &m.enum_type {
            check_enum(&scope, e);
        }
    }

    #[test]
    fn messages_enums_and_fields_follow_buf_standard_naming() {
        for file in caremesh_files() {
            for m in &file.message_type {
                check_message("", m);
            }
            for e in &file.enum_type {
                check_enum("", e);
            }
        }
    }

    /// Collects the paths of everything that needs a leading comment.
    fn message_paths(path: &[i32], m: &DescriptorProto, label: &str, out: &mut Vec<(Vec<i32>, String)>) {
        let label = format!("{label}.{}", m.name());
        out.push((path.to_vec(), format!("message {label}")));
        for (i, field) in m.field.iter().enumerate() {
            let mut p = path.to_vec();
            p.extend([MESSAGE_FIELD, index(i)]);
            out.push((p, format!("field {label}.{}", field.name())));
        }
        for (i, oneof) in m.oneof_decl.iter().enumerate() {
            if is_synthetic_oneof(m, i) {
                continue;
            }
            let mut p = path.to_vec();
            p.extend([MESSAGE_ONEOF_DECL, index(i)]);
            out.push((p, format!("oneof {label}.{}", oneof.name())));
        }
        for (i, nested) in m.nested_type.iter().enumerate() {
            let mut p = path.to_vec();
            p.extend([MESSAGE_NESTED_TYPE, index(i)]);
            message_paths(&p, nested, &label, out);
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            let mut p = path.to_vec();
            p.extend([MESSAGE_ENUM_TYPE, index(i)]);
            enum_paths(&p, e, &label, out);
        }
    }

    fn enum_paths(path: &[i32], e: &EnumDescriptorProto, label: &str, out: &mut Vec<(Vec<i32>, String)>) {
        let label = format!("{label}.{}", e.name());
        out.push((path.to_vec(), format!("enum {label}")));
        for (i, value) in e.value.iter().enumerate() {
            let mut p = path.to_vec();
            p.extend([ENUM_VALUE, index(i)]);
            out.push((p, format!("enum value {label}.{}", value.name())));
        }
    }

    /// The comments are the API documentation users see in `grpcurl describe`: every service, RPC,
    /// message, field, oneof, enum and enum value has one.
    #[test]
    fn everything_is_documented() {
        let mut missing = Vec::new();
        for file in caremesh_files() {
            let documented: BTreeSet<Vec<i32>> = file
                .source_code_info
                .as_ref()
                .expect("source info is kept")
                .location
                .iter()
                .filter(|l| l.leading_comments.as_deref().is_some_and(|c| !c.trim().is_empty()))
                .map(|l| l.path.clone())
                .collect();

            let package = file.package();
            let mut wanted = Vec::new();
            for (i, m) in file.message_type.iter().enumerate() {
                message_paths(&[FILE_MESSAGE_TYPE, index(i)], m, package, &mut wanted);
            }
            for (i, e) in file.enum_type.iter().enumerate() {
                enum_paths(&[FILE_ENUM_TYPE, index(i)], e, package, &mut wanted);
            }
            for (i, s) in file.service.iter().enumerate() {
                let path = vec![FILE_SERVICE, index(i)];
                wanted.push((path.clone(), format!("service {package}.{}", s.name())));
                for (j, method) in s.method.iter().enumerate() {
                    let mut p = path.clone();
                    p.extend([SERVICE_METHOD, index(j)]);
                    wanted.push((p, format!("rpc {package}.{}.{}", s.name(), method.name())));
                }
            }
            missing.extend(
                wanted
                    .into_iter()
                    .filter(|(path, _)| !documented.contains(path))
                    .map(|(_, label)| format!("{label} ({})", file.name())),
            );
        }
        assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
    }

    #[test]
    fn lists_use_aip_158_pagination() {
        for file in caremesh_files() {
            let messages: BTreeMap<&str, &DescriptorProto> = file.message_type.iter().map(|m| (m.name(), m)).collect();
            for service in &file.service {
                for method in &service.method {
                    if !method.name().starts_with("List") {
                        continue;
                    }
                    let request = messages[format!("{}Request", method.name()).as_str()];
                    let response = messages[format!("{}Response", method.name()).as_str()];
                    let field =
                        |m: &DescriptorProto, n: &str| m.field.iter().find(|f| f.name() == n).map(|f| f.r#type());
                    use prost_types::field_descriptor_proto::Type;
                    assert_eq!(field(request, "page_size"), Some(Type::Int32), "{}", method.name());
                    assert_eq!(field(request, "page_token"), Some(Type::String), "{}", method.name());
                    assert_eq!(
                        field(response, "next_page_token"),
                        Some(Type::String),
                        "{}",
                        method.name()
                    );
                }
            }
        }
    }

    #[test]
    fn generated_api_has_the_shared_audit_types() {
        use crate::audit::v1::{
            AuditAction, AuditActor, AuditEvent, AuditOutcome, IngestEventsRequest, IngestEventsResponse,
            audit_internal_service_client::AuditInternalServiceClient,
            audit_internal_service_server::{AuditInternalService, AuditInternalServiceServer},
        };

        let event = AuditEvent {
            event_id: "0190f5b2-7c3e-7000-8000-000000000001".to_owned(),
            recorded_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            actor: Some(AuditActor {
                user_id: "0190f5b2-7c3e-7000-8000-000000000002".to_owned(),
                role: "doctor".to_owned(),
                ..Default::default()
            }),
            action: AuditAction::Read.into(),
            operation: "/caremesh.records.v1.RecordsService/GetRecord".to_owned(),
            outcome: AuditOutcome::Denied.into(),
            emergency: true,
            ..Default::default()
        };
        let request = IngestEventsRequest {
            events: vec![event.clone()],
        };
        let decoded = IngestEventsRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.events, vec![event]);
        assert_eq!(decoded.events[0].action(), AuditAction::Read);
        let _ = IngestEventsResponse {
            accepted: 1,
            duplicates: 0,
        };

        /// A server implementation compiles against the generated trait.
        struct Counter;
        #[tonic::async_trait]
        impl AuditInternalService for Counter {
            async fn ingest_events(
                &self,
                request: tonic::Request<IngestEventsRequest>,
            ) -> Result<tonic::Response<IngestEventsResponse>, tonic::Status> {
                let accepted = u32::try_from(request.into_inner().events.len()).unwrap_or(u32::MAX);
                Ok(tonic::Response::new(IngestEventsResponse {
                    accepted,
                    duplicates: 0,
                }))
            }
        }
        let _server = AuditInternalServiceServer::new(Counter);
        let _: Option<AuditInternalServiceClient<tonic::transport::Channel>> = None;
    }
}
