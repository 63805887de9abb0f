//! Tracing and OpenTelemetry (DESIGN.md §7).
//!
//! Every process installs one subscriber: an env-filtered fmt layer (structured fields; no health
//! data is ever put in a field) and an OpenTelemetry layer, so every span has a W3C trace id even
//! when nothing exports it. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go to that collector.
//!
//! Trace context crosses every service-to-service call: [`TraceContextInterceptor`] injects the
//! current span's `traceparent` into outgoing metadata, and [`TraceContextLayer`] opens each
//! server span as a child of the incoming one.

use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// Log filter when `RUST_LOG` is unset: our info, the libraries' warnings.
const DEFAULT_FILTER: &str = "info,sea_orm=warn,sea_orm_migration=warn,sqlx=warn,h2=warn,hyper=warn,tower=warn";

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Keeps the tracer provider alive; flushes pending spans on [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "flushing traces at shutdown failed");
        }
    }
}

/// A tracer provider that exports to `otlp_endpoint` over OTLP/gRPC when one is given.
pub fn tracer_provider(otlp_endpoint: Option<&str>) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("caremesh")
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|error| TelemetryError::Exporter {
                endpoint: endpoint.to_owned(),
                message: error.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the process-wide subscriber with `provider` behind its OpenTelemetry layer. If a
/// subscriber is already installed (a second service in the same process), that one is kept.
pub fn install(provider: SdkTracerProvider, format: LogFormat) -> Telemetry {
    let tracer = provider.tracer("caremesh");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _already_installed = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    Telemetry { provider }
}

/// The W3C trace id of the current span, or an empty string outside any trace.
pub fn current_trace_id() -> String {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Injects the current span's trace context into outgoing gRPC metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        Ok(request)
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Opens a `grpc.server` span for each request, continuing the caller's trace when the request
/// carries a `traceparent` header.
#[derive(Clone, Debug)]
pub struct TraceContextLayer {
    service: &'static str,
}

impl TraceContextLayer {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower_layer::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService {
            inner,
            service: self.service,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TraceContextService<S> {
    inner: S,
    service: &'static str,
}

impl<S, B> tower_service::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        let span = tracing::info_span!(
            "grpc.server",
            otel.kind = "server",
            rpc.method = %request.uri().path(),
            service = self.service,
        );
        // Only fails when the span is disabled by the filter; then there is nothing to link.
        let _disabled = span.set_parent(parent);
        self.inner.call(request).instrument(span)
    }
}
