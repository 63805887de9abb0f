//! Hostile-input sweep (issue #8): every RPC of every caremesh service, found in the encoded
//! descriptor set (so a new RPC is covered without touching this file), called over real mTLS with
//! hostile requests built by reflection and with malformed protobuf bytes, as every kind of caller:
//! no token, an expired token, tokens signed by a foreign key, a valid patient (AAL2), and for the
//! internal services the operator certificate, the wrong service certificates and the allowed one.
//!
//! Whatever comes in, no answer may be INTERNAL, UNKNOWN (a handler panic surfaces as a reset,
//! UNKNOWN or INTERNAL), UNAVAILABLE (a peer's failure is reported as UNAVAILABLE) or silence, and
//! every error must say what is wrong. Afterwards every service still reports SERVING, people can
//! still sign up and sign in, and refused writes left nothing behind (counts through the API and in
//! the tables).
//!
//! Cost: the large cases (1 MiB strings, 4 MiB bytes, 10,000-element lists and maps) are sent by
//! the callers that get past authentication (no token for the public RPCs, the patient, the
//! allowed mesh identity); the refused callers get one small hostile value per field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use caremesh_proto::auth::v1::WhoAmIRequest;
use caremesh_proto::auth::v1::auth_service_client::AuthServiceClient;
use caremesh_proto::messaging::v1 as msg_pb;
use caremesh_proto::records::v1 as rec_pb;
use caremesh_runtime::grpc::PeerPolicy;
use caremesh_sdk::auth::{Role, Session};
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{Backend, Caller, Service, TestMesh, TestUser, backends};
use futures::StreamExt as _;
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use sea_orm::{ConnectionTrait, Statement};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// tonic's default limit for a decoded request on the server (the services keep it).
const SERVER_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// How long a call may take before its silence counts as a finding.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server stream that was accepted is given to send its first item (a live
/// subscription may legitimately stay silent).
const STREAM_WAIT: Duration = Duration::from_millis(500);
/// Calls in flight at once.
const PARALLEL: usize = 6;
/// Nesting depth up to which fields of nested messages are mutated.
const MAX_DEPTH: usize = 3;
/// Elements in the "huge repeated field" cases.
const MANY: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Raw bytes over a real tonic channel.

/// A codec that sends and receives the message bytes as they are.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len).to_vec()))
    }
}

/// What one call came back with.
#[derive(Clone, Debug)]
enum Outcome {
    /// A response (or, for a server stream, the first item or a quiet open stream).
    Ok,
    Status(Status),
    /// No answer within [`CALL_TIMEOUT`].
    Silent,
}

impl Outcome {
    fn code(&self) -> Option<Code> {
        match self {
            Outcome::Ok => Some(Code::Ok),
            Outcome::Status(status) => Some(status.code()),
            Outcome::Silent => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Ok => "OK".to_owned(),
            Outcome::Status(status) => format!("{:?}: {:?}", status.code(), truncate(status.message(), 200)),
            Outcome::Silent => format!("no answer within {CALL_TIMEOUT:?}"),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

async fn call(channel: Channel, rpc: &Rpc, body: Vec<u8>, token: Option<&str>) -> Outcome {
    let path = PathAndQuery::from_maybe_shared(rpc.path.clone()).expect("method path");
    let mut request = tonic::Request::new(body);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header value"),
        );
    }
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let attempt = async {
        if let Err(error) = grpc.ready().await {
            return Outcome::Status(Status::unavailable(format!("channel not ready: {error}")));
        }
        match (rpc.client_streaming, rpc.server_streaming) {
            (false, false) => match grpc.unary::<_, Vec<u8>, _>(request, path, RawCodec).await {
                Ok(_) => Outcome::Ok,
                Err(status) => Outcome::Status(status),
            },
            (false, true) => match grpc.server_streaming::<_, Vec<u8>, _>(request, path, RawCodec).await {
                Ok(response) => first_item(response.into_inner()).await,
                Err(status) => Outcome::Status(status),
            },
            (true, streaming) => {
                let (metadata, extensions, body) = request.into_parts();
                let request = tonic::Request::from_parts(metadata, extensions, futures::stream::iter(vec![body]));
                if streaming {
                    match grpc.streaming::<_, _, Vec<u8>, _>(request, path, RawCodec).await {
                        Ok(response) => first_item(response.into_inner()).await,
                        Err(status) => Outcome::Status(status),
                    }
                } else {
                    match grpc.client_streaming::<_, _, Vec<u8>, _>(request, path, RawCodec).await {
                        Ok(_) => Outcome::Ok,
                        Err(status) => Outcome::Status(status),
                    }
                }
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, attempt)
        .await
        .unwrap_or(Outcome::Silent)
}

async fn first_item(mut stream: tonic::Streaming<Vec<u8>>) -> Outcome {
    match tokio::time::timeout(STREAM_WAIT, stream.message()).await {
        // Quiet (a live stream waiting for news), an item, or a clean end: accepted.
        Err(_) | Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(status)) => Outcome::Status(status),
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery: every RPC in the descriptor set.

#[derive(Clone, Debug)]
struct Rpc {
    /// `package.Service/Method`, for messages.
    name: String,
    /// `/package.Service/Method`.
    path: String,
    input: MessageDescriptor,
    target: Service,
    internal: bool,
    client_streaming: bool,
    server_streaming: bool,
    /// For internal RPCs: the mesh identities allowed by the serving service's peer policy.
    allowed: Vec<Service>,
}

/// The service that serves a package (a new package must be added here, the test says so).
fn serving(package: &str) -> Service {
    match package {
        "caremesh.auth.v1" => Service::Auth,
        "caremesh.messaging.v1" => Service::Messaging,
        "caremesh.abe.v1" => Service::AbeAuthority,
        "caremesh.records.v1" => Service::Records,
        "caremesh.audit.v1" => Service::Audit,
        other => panic!("the sweep does not know which service serves {other}: add it to `serving`"),
    }
}

fn peer_policy(service: Service) -> PeerPolicy {
    match service {
        Service::Auth => auth_svc::peer_policy(),
        Service::Messaging => messaging_svc::peer_policy(),
        Service::AbeAuthority => abe_authority_svc::peer_policy(),
        Service::Records => records_svc::peer_policy(),
        Service::Audit => audit_svc::peer_policy(),
    }
}

fn discover() -> Vec<Rpc> {
    let pool = DescriptorPool::decode(caremesh_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes");
    let in_pool: BTreeSet<String> = pool
        .services()
        .filter(|service| service.package_name().starts_with("caremesh."))
        .map(|service| service.full_name().to_owned())
        .collect();
    let listed: BTreeSet<String> = caremesh_proto::SERVICE_NAMES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    assert_eq!(in_pool, listed, "SERVICE_NAMES and the descriptor set disagree");
    let mut rpcs = Vec::new();
    for name in caremesh_proto::SERVICE_NAMES {
        let service = pool.get_service_by_name(name).expect("listed service in the pool");
        let target = serving(service.package_name());
        let internal = service.name().ends_with("InternalService");
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let policy = peer_policy(target);
            let allowed = Service::ALL
                .into_iter()
                .filter(|peer| internal && policy.check(&path, Some(&peer.spiffe_id())).is_ok())
                .collect();
            rpcs.push(Rpc {
                name: format!("{}/{}", service.full_name(), method.name()),
                path,
                input: method.input(),
                target,
                internal,
                client_streaming: method.is_client_streaming(),
                server_streaming: method.is_server_streaming(),
                allowed,
            });
        }
    }
    rpcs
}

// ---------------------------------------------------------------------------------------------
// Cases: hostile values built by reflection, and malformed bytes.

#[derive(Clone, Debug)]
struct Case {
    label: String,
    body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Weight {
    /// Every hostile value, large ones included.
    Full,
    /// One small hostile value per field.
    Light,
    /// The empty message only: for a token with a made-up key id, which each service checks by
    /// fetching auth-svc's keys again, at most once per 250 ms (so each such call takes 250 ms).
    Minimal,
}

/// How to reach a field from the request message.
#[derive(Clone, Debug)]
enum Step {
    /// A field of the current message (the last step is the one set).
    Field(FieldDescriptor),
    /// A repeated message field holding one element, descended into.
    Element(FieldDescriptor),
}

impl Step {
    fn field(&self) -> &FieldDescriptor {
        match self {
            Step::Field(field) | Step::Element(field) => field,
        }
    }
}

fn path_name(path: &[Step]) -> String {
    path.iter()
        .map(|step| match step {
            Step::Field(field) => field.name().to_owned(),
            Step::Element(field) => format!("{}[0]", field.name()),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn leaves(message: &MessageDescriptor, prefix: &[Step], out: &mut Vec<Vec<Step>>) {
    if prefix.len() >= MAX_DEPTH {
        return;
    }
    for field in message.fields() {
        let mut path = prefix.to_vec();
        path.push(Step::Field(field.clone()));
        out.push(path);
        if let Kind::Message(nested) = field.kind()
            && !field.is_map()
        {
            let mut deeper = prefix.to_vec();
            deeper.push(if field.is_list() {
                Step::Element(field.clone())
            } else {
                Step::Field(field.clone())
            });
            leaves(&nested, &deeper, out);
        }
    }
}

fn set_path(message: &mut DynamicMessage, path: &[Step], leaf: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        message.set_field(first.field(), leaf);
        return;
    }
    let Kind::Message(nested) = first.field().kind() else {
        panic!("{} is not a message field", first.field().full_name());
    };
    let mut child = DynamicMessage::new(nested);
    set_path(&mut child, rest, leaf);
    match first {
        Step::Field(field) => message.set_field(field, Value::Message(child)),
        Step::Element(field) => message.set_field(field, Value::List(vec![Value::Message(child)])),
    }
}

/// One ordinary value of a field's type (an element of a huge list, a map value).
fn sample(kind: &Kind) -> Value {
    match kind {
        Kind::Double => Value::F64(1.0),
        Kind::Float => Value::F32(1.0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
        Kind::Bool => Value::Bool(true),
        Kind::String => Value::String("0198a7c0-0000-7000-8000-000000000000".to_owned()),
        Kind::Bytes => Value::Bytes(vec![0xAB; 32].into()),
        Kind::Message(message) => Value::Message(DynamicMessage::new(message.clone())),
        Kind::Enum(_) => Value::EnumNumber(1),
    }
}

fn map_key(kind: &Kind, i: usize) -> MapKey {
    let n = i as u64;
    match kind {
        Kind::Bool => MapKey::Bool(i.is_multiple_of(2)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(i32::try_from(i).unwrap()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(i64::try_from(i).unwrap()),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(u32::try_from(i).unwrap()),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(n),
        _ => MapKey::String(format!("key-{i}")),
    }
}

fn control_characters() -> String {
    "\0nul\u{1}\u{7}\u{8}\u{1b}[2J\r\n\t\u{7f}\u{85}\u{2028}\u{202e}'; DROP TABLE users; -- %s%n{0} ../../etc/passwd\0"
        .to_owned()
}

fn long_unicode() -> String {
    // ~256 KiB of multi-byte characters: astral plane, combining marks, RTL override, BOM, CJK.
    "𝔠𝔞𝔯𝔢 é\u{301} 中文 \u{202e}שלום\u{feff} 🏥 ".repeat(256 * 1024 / 48)
}

/// The hostile values of one field, with a label each.
fn hostile_values(field: &FieldDescriptor, weight: Weight) -> Vec<(String, Value)> {
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else {
            panic!("map field {} without an entry message", field.full_name())
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let count = if weight == Weight::Full { MANY } else { 3 };
        let map: HashMap<MapKey, Value> = (0..count)
            .map(|i| (map_key(&key_kind, i), sample(&value_kind)))
            .collect();
        return vec![(format!("{count} map entries"), Value::Map(map))];
    }
    if field.is_list() {
        let count = if weight == Weight::Full { MANY } else { 3 };
        return vec![(format!("{count} elements"), Value::List(vec![sample(&kind); count]))];
    }
    let full = weight == Weight::Full;
    let mut values: Vec<(String, Value)> = match kind {
        Kind::String => {
            let mut values = vec![(
                "control characters and NUL".to_owned(),
                Value::String(control_characters()),
            )];
            if full {
                values.push(("empty string".to_owned(), Value::String(String::new())));
                values.push(("1 MiB string".to_owned(), Value::String("a".repeat(1024 * 1024))));
                values.push(("~256 KiB unicode string".to_owned(), Value::String(long_unicode())));
            }
            values
        }
        Kind::Bytes => {
            let mut values = vec![("17 bytes".to_owned(), Value::Bytes(vec![0x5A; 17].into()))];
            if full {
                values.push(("empty bytes".to_owned(), Value::Bytes(Vec::new().into())));
                values.push((
                    "just under the 4 MiB message limit".to_owned(),
                    Value::Bytes(vec![0xA5; SERVER_MAX_MESSAGE - 64 * 1024].into()),
                ));
            }
            values
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => [-1, i32::MIN, i32::MAX, 0]
            .into_iter()
            .map(|n| (format!("{n}"), Value::I32(n)))
            .collect(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => [-1, i64::MIN, i64::MAX, 0]
            .into_iter()
            .map(|n| (format!("{n}"), Value::I64(n)))
            .collect(),
        Kind::Uint32 | Kind::Fixed32 => [u32::MAX, 0]
            .into_iter()
            .map(|n| (format!("{n}"), Value::U32(n)))
            .collect(),
        Kind::Uint64 | Kind::Fixed64 => [u64::MAX, 0]
            .into_iter()
            .map(|n| (format!("{n}"), Value::U64(n)))
            .collect(),
        Kind::Double => [f64::NAN, -1.0, f64::INFINITY, f64::MIN]
            .into_iter()
            .map(|n| (format!("{n}"), Value::F64(n)))
            .collect(),
        Kind::Float => [f32::NAN, -1.0, f32::INFINITY, f32::MIN]
            .into_iter()
            .map(|n| (format!("{n}"), Value::F32(n)))
            .collect(),
        Kind::Bool => vec![("true".to_owned(), Value::Bool(true))],
        Kind::Enum(_) => [999, -1]
            .into_iter()
            .map(|n| (format!("unknown enum value {n}"), Value::EnumNumber(n)))
            .collect(),
        Kind::Message(message) => vec![(
            "present but empty".to_owned(),
            Value::Message(DynamicMessage::new(message)),
        )],
    };
    if !full {
        values.truncate(1);
    }
    values
}

fn value_cases(input: &MessageDescriptor, weight: Weight) -> Vec<Case> {
    let mut cases = vec![Case {
        label: "empty message".to_owned(),
        body: Vec::new(),
    }];
    if weight == Weight::Minimal {
        return cases;
    }
    if weight == Weight::Full {
        // Over the server's limit: once per RPC, as the transport refuses it whatever the field.
        let mut huge = vec![0x0A];
        varint(SERVER_MAX_MESSAGE as u64, &mut huge);
        huge.resize(huge.len() + SERVER_MAX_MESSAGE, b'a');
        cases.push(Case {
            label: "a 4 MiB message (over the server's limit)".to_owned(),
            body: huge,
        });
    }
    let mut paths = Vec::new();
    leaves(input, &[], &mut paths);
    for path in paths {
        let Some(Step::Field(field)) = path.last() else {
            continue;
        };
        for (what, value) in hostile_values(field, weight) {
            let mut message = DynamicMessage::new(input.clone());
            set_path(&mut message, &path, value);
            cases.push(Case {
                label: format!("{} = {what}", path_name(&path)),
                body: message.encode_to_vec(),
            });
        }
    }
    dedupe(cases)
}

/// Same bytes, same answer: keep the first label.
fn dedupe(cases: Vec<Case>) -> Vec<Case> {
    let mut seen = HashSet::new();
    cases
        .into_iter()
        .filter(|case| seen.insert(case.body.clone()))
        .collect()
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(u8::try_from(n & 0x7F).unwrap() | 0x80);
        n >>= 7;
    }
    out.push(u8::try_from(n).unwrap());
}

fn tag(number: u32, wire_type: u8) -> Vec<u8> {
    let mut out = Vec::new();
    varint((u64::from(number) << 3) | u64::from(wire_type), &mut out);
    out
}

/// Whether a field is length-delimited on the wire.
fn is_length_delimited(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::String | Kind::Bytes | Kind::Message(_)) || field.is_list() || field.is_map()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes()[0]
        })
        .collect()
}

fn malformed_cases(input: &MessageDescriptor) -> Vec<Case> {
    let case = |label: &str, body: Vec<u8>| Case {
        label: label.to_owned(),
        body,
    };
    let mut cases = vec![
        case("random garbage (256 bytes)", garbage(0x5EED_CAFE, 256)),
        case("random garbage (7 bytes)", garbage(42, 7)),
        case("truncated varint", [tag(1, 0), vec![0xFF, 0xFF]].concat()),
        case(
            "overlong varint (11 bytes)",
            [tag(1, 0), vec![0xFF; 10], vec![0x01]].concat(),
        ),
        case("length prefix past the end", [tag(1, 2), vec![0x10, b'a']].concat()),
        case("field number 0", vec![0x00, 0x00]),
        case("invalid wire type 7", tag(1, 7)),
        case("lone end-group tag", tag(1, 4)),
        case("unterminated start-group", [tag(9, 3), tag(9, 0), vec![1]].concat()),
    ];
    let mut nested_depth = Vec::new();
    for _ in 0..200 {
        nested_depth.extend(tag(15, 3));
    }
    cases.push(case("200 nested groups", nested_depth));
    for field in input.fields() {
        let number = field.number();
        let wrong = if is_length_delimited(&field) {
            [tag(number, 0), vec![0x01]].concat()
        } else {
            [tag(number, 2), vec![0x01, b'a']].concat()
        };
        cases.push(case(&format!("{} with the wrong wire type", field.name()), wrong));
        if field.kind() == Kind::String {
            cases.push(case(
                &format!("{} = invalid UTF-8", field.name()),
                [tag(number, 2), vec![0x04, 0xC3, 0x28, 0xFF, 0xFE]].concat(),
            ));
        }
        if let Kind::Message(_) = field.kind() {
            // A nested message that is itself garbage.
            cases.push(case(
                &format!("{} = nested garbage", field.name()),
                [tag(number, 2), vec![0x03, 0x08, 0xFF, 0xFF]].concat(),
            ));
        }
    }
    dedupe(cases)
}

// ---------------------------------------------------------------------------------------------
// Callers.

#[derive(Clone, Debug)]
struct Who {
    name: String,
    caller: Caller,
    token: Option<String>,
    weight: Weight,
    /// An expired or forged token.
    bad_token: bool,
    /// What every answer to this caller must be, when it is refused before any handler runs.
    must_be: Option<Code>,
}

struct Tokens {
    patient: String,
    expired: Option<String>,
    foreign_key: String,
    foreign_kid: String,
}

fn forge(real: &str, with_foreign_kid: bool) -> String {
    use base64::Engine as _;
    let payload = real.split('.').nth(1).expect("a cmt1 token");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    let mut claims: caremesh_token::Claims = serde_json::from_slice(&json).expect("claims");
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    if with_foreign_kid {
        claims.kid = caremesh_token::key_id(&key.verifying_key());
    }
    caremesh_token::sign(&claims, &key).expect("sign")
}

fn callers(rpc: &Rpc, tokens: &Tokens) -> Vec<Who> {
    let who = |name: &str, caller: Caller, token: Option<&str>, weight: Weight, must_be: Option<Code>| Who {
        name: name.to_owned(),
        caller,
        token: token.map(str::to_owned),
        weight,
        bad_token: false,
        must_be,
    };
    if let Some(expired) = &tokens.expired {
        // The last phase: the patient's token, after the clock moved past its expiry.
        let must_be = rpc.internal.then_some(Code::Unauthenticated);
        return vec![Who {
            bad_token: true,
            ..who(
                "expired token",
                Caller::Anonymous,
                Some(expired),
                Weight::Light,
                must_be,
            )
        }];
    }
    if rpc.internal {
        let mut all = vec![
            who(
                "no certificate, no token",
                Caller::Anonymous,
                None,
                Weight::Light,
                Some(Code::Unauthenticated),
            ),
            who(
                "patient token without a certificate",
                Caller::Anonymous,
                Some(&tokens.patient),
                Weight::Light,
                Some(Code::Unauthenticated),
            ),
            who(
                "operator certificate",
                Caller::Operator,
                Some(&tokens.patient),
                Weight::Light,
                Some(Code::PermissionDenied),
            ),
        ];
        for service in Service::ALL {
            if rpc.allowed.contains(&service) {
                continue;
            }
            all.push(who(
                &format!("{service} certificate (not allowed)"),
                Caller::Service(service),
                None,
                Weight::Light,
                Some(Code::PermissionDenied),
            ));
        }
        if let Some(allowed) = rpc.allowed.first() {
            all.push(who(
                &format!("{allowed} certificate (allowed)"),
                Caller::Service(*allowed),
                None,
                Weight::Full,
                None,
            ));
        }
        return all;
    }
    vec![
        who("no token", Caller::Anonymous, None, Weight::Full, None),
        who(
            "patient (AAL2)",
            Caller::Anonymous,
            Some(&tokens.patient),
            Weight::Full,
            None,
        ),
        Who {
            bad_token: true,
            ..who(
                "token signed by a foreign key (real key id)",
                Caller::Anonymous,
                Some(&tokens.foreign_key),
                Weight::Light,
                None,
            )
        },
        Who {
            bad_token: true,
            ..who(
                "token signed by a foreign key (its own key id)",
                Caller::Anonymous,
                Some(&tokens.foreign_kid),
                Weight::Minimal,
                None,
            )
        },
    ]
}

/// One channel (one HTTP/2 connection) per service and caller, so a connection torn down by one
/// caller's calls cannot be blamed on another's; reused for the health checks afterwards.
#[derive(Default)]
struct Channels {
    open: Vec<(Service, String, Channel)>,
}

impl Channels {
    fn get(&mut self, mesh: &TestMesh, service: Service, who: &Who) -> Channel {
        if let Some((_, _, channel)) = self.open.iter().find(|(s, name, _)| *s == service && *name == who.name) {
            return channel.clone();
        }
        let channel = mesh.channel(service, who.caller);
        self.open.push((service, who.name.clone(), channel.clone()));
        channel
    }
}

// ---------------------------------------------------------------------------------------------
// The sweep.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kinds {
    HostileValues,
    MalformedBytes,
}

/// One bad answer.
#[derive(Clone, Debug)]
struct Finding {
    rpc: String,
    caller: String,
    input: String,
    /// What came back during the sweep.
    what: String,
    /// What came back when the same call was repeated alone on a fresh connection.
    alone: String,
}

#[derive(Default)]
struct Report {
    calls: usize,
    codes: BTreeMap<String, usize>,
    findings: Vec<Finding>,
    /// RPC name -> every no-token answer was UNAUTHENTICATED.
    no_token_refused: HashMap<String, bool>,
    /// Time spent building the cases.
    generating: Duration,
    /// RPC name -> time spent on it.
    timings: Vec<(Duration, String)>,
}

/// Answers that mean the server failed rather than refused: a handler panic shows as a reset
/// stream (CANCELLED, UNKNOWN or INTERNAL), a peer's failure as UNAVAILABLE.
fn is_failure(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Ok => false,
        Outcome::Silent => true,
        // A reset stream or connection shows as "h2 protocol error", whatever the code.
        Outcome::Status(status) => {
            matches!(
                status.code(),
                Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::Cancelled
            ) || status.message().starts_with("h2 protocol error")
        }
    }
}

/// What is wrong with an answer, if anything.
fn verdict(who: &Who, outcome: &Outcome, no_token_refused: Option<bool>) -> Option<String> {
    if is_failure(outcome) {
        return Some(outcome.describe());
    }
    if let Outcome::Status(status) = outcome
        && status.message().trim().is_empty()
    {
        return Some(format!("{:?} with an empty message", status.code()));
    }
    // Refusals that happen before any handler runs (the peer allowlist) are exact, whatever the
    // body (even malformed bytes never reach the decoder).
    if let Some(expected) = who.must_be
        && outcome.code() != Some(expected)
    {
        return Some(format!("expected {expected:?}, got {}", outcome.describe()));
    }
    // A bad token must not get further than no token: where no token is refused, the expired and
    // forged ones are refused the same way.
    if who.bad_token && no_token_refused == Some(true) && outcome.code() != Some(Code::Unauthenticated) {
        return Some(format!("a bad token got further than no token: {}", outcome.describe()));
    }
    None
}

/// Whether the patient's token still works (an RPC of the sweep may have ended the session).
async fn patient_token_works(mesh: &TestMesh, token: &str) -> bool {
    let mut request = tonic::Request::new(WhoAmIRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    AuthServiceClient::new(mesh.channel(Service::Auth, Caller::Anonymous))
        .who_am_i(request)
        .await
        .is_ok()
}

async fn sweep(mesh: &TestMesh, patient: &TestUser, kinds: Kinds, channels: &mut Channels, report: &mut Report) {
    let rpcs = discover();
    let real = patient.session.access_token.clone();
    let mut tokens = Tokens {
        patient: real.clone(),
        expired: None,
        foreign_key: forge(&real, false),
        foreign_kid: forge(&real, true),
    };
    let mut relogins = 0;
    for phase in 0..2 {
        if phase == 1 {
            // Past the access-token lifetime (10 minutes) and the tolerated skew.
            mesh.advance(11 * 60);
            tokens.expired = Some(tokens.patient.clone());
        }
        for rpc in &rpcs {
            let started = Instant::now();
            if phase == 0 && !patient_token_works(mesh, &tokens.patient).await {
                relogins += 1;
                tokens.patient = mesh.login_with_totp(patient).await.access_token;
            }
            let mut jobs = Vec::new();
            for mut who in callers(rpc, &tokens) {
                let channel = channels.get(mesh, rpc.target, &who);
                // Without a token only the public RPCs (registration, login, ...) get past the
                // authentication check: the others get the small cases only.
                if who.name == "no token" && who.weight == Weight::Full {
                    let probe = call(channel.clone(), rpc, Vec::new(), None).await;
                    if probe.code() == Some(Code::Unauthenticated) {
                        who.weight = Weight::Light;
                    }
                }
                let generating = Instant::now();
                let cases = match kinds {
                    Kinds::HostileValues => value_cases(&rpc.input, who.weight),
                    Kinds::MalformedBytes => malformed_cases(&rpc.input),
                };
                report.generating += generating.elapsed();
                // The no-token calls go first, so the bad-token ones can be compared with them.
                let order = usize::from(who.bad_token);
                for case in cases {
                    jobs.push((order, who.clone(), case, channel.clone()));
                }
            }
            jobs.sort_by_key(|job| job.0);
            let (first, second): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|job| job.0 == 0);
            for batch in [first, second] {
                let outcomes: Vec<_> = futures::stream::iter(batch)
                    .map(|(_, who, case, channel)| async move {
                        let outcome = call(channel, rpc, case.body.clone(), who.token.as_deref()).await;
                        (who, case, outcome)
                    })
                    .buffer_unordered(PARALLEL)
                    .collect()
                    .await;
                for (who, case, outcome) in outcomes {
                    report.calls += 1;
                    let code = outcome.code().map_or("SILENT".to_owned(), |code| format!("{code:?}"));
                    *report.codes.entry(code).or_default() += 1;
                    if kinds == Kinds::HostileValues && who.name == "no token" {
                        *report.no_token_refused.entry(rpc.name.clone()).or_insert(true) &=
                            outcome.code() == Some(Code::Unauthenticated);
                    }
                    let no_token_refused = report.no_token_refused.get(&rpc.name).copied();
                    let Some(what) = verdict(&who, &outcome, no_token_refused) else {
                        continue;
                    };
                    // Again, alone on a fresh connection: is it this input, or collateral damage
                    // from another call on the same connection?
                    let fresh = mesh.channel(rpc.target, who.caller);
                    let again = call(fresh, rpc, case.body.clone(), who.token.as_deref()).await;
                    let alone = verdict(&who, &again, no_token_refused)
                        .unwrap_or_else(|| format!("fine alone ({})", again.describe()));
                    report.findings.push(Finding {
                        rpc: rpc.name.clone(),
                        caller: who.name.clone(),
                        input: truncate(&case.label, 120),
                        what,
                        alone,
                    });
                }
            }
            report
                .timings
                .push((started.elapsed(), format!("{} (phase {phase})", rpc.name)));
        }
    }
    report.timings.sort_by_key(|timing| std::cmp::Reverse(timing.0));
    eprintln!(
        "sweep ({kinds:?}): {} RPCs, {} calls ({:.1}s building them), answers {:?}, patient signed in again {relogins} times; slowest: {:?}",
        rpcs.len(),
        report.calls,
        report.generating.as_secs_f64(),
        report.codes,
        report.timings.iter().take(8).collect::<Vec<_>>()
    );
}

fn findings_text(findings: &[&Finding]) -> String {
    // One block per kind of bad answer; in it one line per RPC with its callers and inputs.
    type Rpcs = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>, usize)>;
    let mut groups: BTreeMap<String, Rpcs> = BTreeMap::new();
    for finding in findings {
        // Decode errors differ per input only in their detail: group them by their prefix.
        let what = finding
            .what
            .split_once(": \"failed to decode Protobuf message")
            .map_or(finding.what.clone(), |(code, _)| {
                format!("{code}: \"failed to decode Protobuf message: ...\"")
            });
        let what = if finding.alone.starts_with("fine alone") {
            format!("{what} (alone: {})", finding.alone)
        } else {
            format!("{what} (the same when repeated alone)")
        };
        let entry = groups.entry(what).or_default().entry(finding.rpc.clone()).or_default();
        entry.0.insert(finding.caller.clone());
        entry.1.insert(finding.input.clone());
        entry.2 += 1;
    }
    let mut text = String::new();
    for (what, rpcs) in &groups {
        let calls: usize = rpcs.values().map(|entry| entry.2).sum();
        let _ = writeln!(text, "  {what}: {calls} calls, {} RPCs", rpcs.len());
        for (rpc, (callers, inputs, _)) in rpcs.iter().take(16) {
            let _ = writeln!(
                text,
                "    {rpc} | callers: {} | inputs: {}{}",
                callers.iter().cloned().collect::<Vec<_>>().join(", "),
                inputs.iter().take(6).cloned().collect::<Vec<_>>().join("; "),
                if inputs.len() > 6 {
                    format!("; ... ({} inputs)", inputs.len())
                } else {
                    String::new()
                }
            );
        }
        if rpcs.len() > 16 {
            let _ = writeln!(text, "    ... and {} more RPCs", rpcs.len() - 16);
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// What must still hold afterwards.

async fn count(db: &sea_orm::DatabaseConnection, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Row counts of the tables no refused call may write to.
async fn table_counts(mesh: &TestMesh) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (service, tables) in [
        (Service::Auth, &["users", "emergency_grants"][..]),
        (
            Service::Messaging,
            &[
                "messages",
                "deliveries",
                "identity_keys",
                "signed_prekeys",
                "one_time_prekeys",
            ][..],
        ),
        (Service::Records, &["records", "record_versions"][..]),
        (Service::AbeAuthority, &["emergency_grants", "authority"][..]),
    ] {
        let db = mesh.database(service).await;
        for table in tables {
            counts.insert(format!("{service}.{table}"), count(&db, table).await);
        }
    }
    counts
}

/// What the patient and their doctor see through the API.
async fn api_counts(mesh: &TestMesh, world: &World) -> BTreeMap<&'static str, usize> {
    let patient = mesh.login_with_totp(&world.patient).await;
    let doctor = mesh.login_with_totp(&world.doctor).await;
    let all = rec_pb::ListRecordsRequest {
        page_size: 100,
        include_entered_in_error: true,
        ..Default::default()
    };
    let (own, _) = world.patient_device.list_records(&patient, all.clone()).await.unwrap();
    let (theirs, _) = world
        .doctor_device
        .list_records(
            &doctor,
            rec_pb::ListRecordsRequest {
                patient_id: world.patient.user_id.clone(),
                ..all
            },
        )
        .await
        .unwrap();
    let (inbox, _) = world
        .patient_device
        .inbox(
            &patient,
            msg_pb::ListInboxRequest {
                page_size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let history = world
        .doctor_device
        .history(
            &doctor,
            msg_pb::list_conversation_messages_request::Target::PeerUserId(world.patient.user_id.clone()),
            msg_pb::SortOrder::Unspecified,
        )
        .await
        .unwrap();
    let conversations = world.patient_device.conversations(&patient).await.unwrap();
    BTreeMap::from([
        ("patient's own records", own.len()),
        ("the patient's records the doctor lists", theirs.len()),
        ("patient's inbox", inbox.len()),
        ("doctor's conversation with the patient", history.len()),
        ("patient's conversations", conversations.len()),
    ])
}

/// A patient with a record and a message from their doctor, made the way users do.
struct World {
    patient: TestUser,
    doctor: TestUser,
    patient_device: Messenger,
    doctor_device: Messenger,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn device(mesh: &TestMesh, session: &Session) -> (Messenger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", session)
        .await
        .unwrap();
    (messenger, dir)
}

async fn world(mesh: &TestMesh) -> World {
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let (patient_device, p_dir) = device(mesh, &patient.session).await;
    let (doctor_device, d_dir) = device(mesh, &doctor.session).await;
    doctor_device
        .create_record(
            &doctor.session,
            NewRecord {
                patient_id: &patient.user_id,
                kind: "Observation",
                policy: r#""role:doctor" and "dept:cardiology""#,
                content: br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"}}"#,
            },
        )
        .await
        .unwrap();
    doctor_device
        .send(&doctor.session, &patient.user_id, b"your results are in", None)
        .await
        .unwrap();
    World {
        patient,
        doctor,
        patient_device,
        doctor_device,
        _dirs: (p_dir, d_dir),
    }
}

async fn still_serving(mesh: &TestMesh, channels: &mut Channels, name: &str) {
    for service in Service::ALL {
        let mut names = vec![String::new()];
        names.extend(
            caremesh_proto::SERVICE_NAMES
                .iter()
                .filter(|full| serving(full.rsplit_once('.').unwrap().0) == service)
                .map(|full| (*full).to_owned()),
        );
        // The channels the sweep used (every caller kind), then a fresh one.
        let mut used: Vec<Channel> = channels
            .open
            .iter()
            .filter(|(s, _, _)| *s == service)
            .map(|(_, _, channel)| channel.clone())
            .collect();
        used.push(mesh.channel(service, Caller::Anonymous));
        for channel in used {
            for health_name in &names {
                let status = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest {
                        service: health_name.clone(),
                    })
                    .await
                    .unwrap_or_else(|status| panic!("{name}: {service} health {health_name:?}: {status:?}"))
                    .into_inner()
                    .status();
                assert_eq!(
                    status,
                    ServingStatus::Serving,
                    "{name}: {service} health {health_name:?} after the sweep"
                );
            }
        }
    }
}

/// Sweeps one mesh; returns the confirmed bad answers, if any.
async fn run(backend: Backend, kinds: Kinds) -> Option<String> {
    let started = Instant::now();
    let mesh = TestMesh::builder().backend(backend.clone()).start().await;
    let name = format!("{} {kinds:?}", backend.name());
    let world = world(&mesh).await;
    let tables_before = table_counts(&mesh).await;
    let api_before = api_counts(&mesh, &world).await;

    let mut channels = Channels::default();
    let mut report = Report::default();
    sweep(&mesh, &world.patient, kinds, &mut channels, &mut report).await;
    let swept = started.elapsed();

    // Every service still answers on the very channels the sweep used.
    still_serving(&mesh, &mut channels, &name).await;
    // People can still sign up and sign in, and the doctor can still write.
    let newcomer = mesh.patient().await;
    assert_eq!(newcomer.session.aal, 2, "{name}");
    let tables_after = table_counts(&mesh).await;
    let api_after = api_counts(&mesh, &world).await;
    assert_eq!(api_after, api_before, "{name}: refused calls changed what users see");
    let mut expected_tables = tables_before.clone();
    // The newcomer is the one new account.
    *expected_tables.get_mut("auth-svc.users").unwrap() += 1;
    assert_eq!(tables_after, expected_tables, "{name}: refused calls left rows behind");
    let again = world
        .doctor_device
        .send(
            &mesh.login_with_totp(&world.doctor).await,
            &world.patient.user_id,
            b"still here",
            None,
        )
        .await;
    assert!(again.is_ok(), "{name}: a normal send after the sweep: {again:?}");

    eprintln!(
        "{name}: swept in {:.1}s, whole test {:.1}s, {} findings",
        swept.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.findings.len()
    );
    mesh.shutdown().await;
    // A bad answer that does not happen again when the call is repeated alone was collateral
    // damage: another call on the same connection broke it (they are listed, not counted).
    let (collateral, confirmed): (Vec<&Finding>, Vec<&Finding>) = report
        .findings
        .iter()
        .partition(|finding| finding.alone.starts_with("fine alone"));
    if !collateral.is_empty() {
        eprintln!(
            "{name}: {} calls failed only while sharing a connection with a failing call:\n{}",
            collateral.len(),
            findings_text(&collateral)
        );
    }
    (!confirmed.is_empty()).then(|| {
        format!(
            "{name}: {} of {} hostile calls were answered badly (each confirmed by repeating it alone):\n{}",
            confirmed.len(),
            report.calls,
            findings_text(&confirmed)
        )
    })
}

/// Every backend, then one verdict.
async fn run_all(kinds: Kinds) {
    let mut failures = Vec::new();
    for backend in backends() {
        failures.extend(run(backend, kinds).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_survives_hostile_field_values_from_every_kind_of_caller() {
    run_all(Kinds::HostileValues).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_malformed_protobuf_bytes_without_an_internal_error() {
    run_all(Kinds::MalformedBytes).await;
}
