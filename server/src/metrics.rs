//! Prometheus metrics of the gateway, served on `--metrics-listen`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Framegate messages (POSTs) by endpoint (`ro`, `rw`).
    pub messages: IntCounterVec,
    /// Commands by name and outcome (`ok` or an error code).
    pub commands: IntCounterVec,
    /// Frame bytes read from request bodies.
    pub bytes_in: IntCounter,
    /// Frame bytes written to response bodies.
    pub bytes_out: IntCounter,
    /// Protocol errors by code.
    pub protocol_errors: IntCounterVec,
    /// Messages being handled now.
    pub in_flight: IntGauge,
    /// Seconds from request to end of response, by endpoint.
    pub latency: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new("framegate_messages_total", "framegate messages by endpoint"),
            &["endpoint"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let commands = IntCounterVec::new(
            Opts::new("framegate_commands_total", "commands by name and outcome"),
            &["command", "outcome"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let bytes_in = IntCounter::new("framegate_bytes_in_total", "frame bytes received")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let bytes_out = IntCounter::new("framegate_bytes_out_total", "frame bytes sent")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let protocol_errors = IntCounterVec::new(
            Opts::new("framegate_protocol_errors_total", "protocol errors by code"),
            &["code"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let in_flight = IntGauge::new("framegate_messages_in_flight", "messages being handled")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let latency = HistogramVec::new(
            HistogramOpts::new("framegate_message_duration_seconds", "message latency").buckets(
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
            ),
            &["endpoint"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        for c in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(commands.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(protocol_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(latency.clone()),
        ] {
            let _ = registry.register(c);
        }
        Metrics {
            registry,
            messages,
            commands,
            bytes_in,
            bytes_out,
            protocol_errors,
            in_flight,
            latency,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
