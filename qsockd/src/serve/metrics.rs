//! The OpenMetrics endpoint (config `metrics_listen`, off by default):
//! `GET /metrics` gives every managed socket's figures as `qsockctl list`
//! shows them (guarantee, measured rate, drops by reason, queuing delay),
//! labelled by cookie, owner uid, device, classid and scheduler, and the
//! number of managed sockets per device. Encoded by `prometheus-client`,
//! served by axum.
use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry as MetricRegistry, Unit},
};
use qsock::SocketSummary;
use tokio::sync::RwLock;

use crate::ops::Registry;

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SocketLabels {
    cookie: String,
    uid: String,
    device: String,
    classid: String,
    scheduler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    cookie: String,
    device: String,
    classid: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DelayLabels {
    cookie: String,
    device: String,
    classid: String,
    quantile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device: String,
}

/// The OpenMetrics text of `sockets` (one scrape). Errors: formatting only.
pub fn render(sockets: &[SocketSummary]) -> Result<String, std::fmt::Error> {
    let mut reg = MetricRegistry::default();
    let guaranteed = Family::<SocketLabels, Gauge>::default();
    let rate = Family::<SocketLabels, Gauge>::default();
    let drops = Family::<DropLabels, Counter>::default();
    let delay = Family::<DelayLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let count = Family::<DeviceLabels, Gauge>::default();
    reg.register_with_unit("qsock_socket_guaranteed_rate", "Rate guaranteed to the socket's class", Unit::Other("bits_per_second".into()), guaranteed.clone());
    reg.register_with_unit("qsock_socket_rate", "Rate the socket sent at over qsockd's rate window", Unit::Other("bits_per_second".into()), rate.clone());
    reg.register(
        "qsock_socket_drops_packets",
        "Packets of the socket dropped, by reason: deadline and frame (the data path), qdisc (its class's queue)",
        drops.clone(),
    );
    reg.register_with_unit(
        "qsock_socket_queuing_delay",
        "Queuing delay of the socket's packets in the qdisc (quantile 1 is the maximum)",
        Unit::Seconds,
        delay.clone(),
    );
    reg.register("qsock_managed_sockets", "Sockets qsockd manages on the device", count.clone());
    for s in sockets {
        let l = SocketLabels {
            cookie: s.cookie.to_string(),
            uid: s.uid.to_string(),
            device: s.device.clone(),
            classid: s.classid.clone(),
            scheduler: s.scheduler.clone(),
        };
        guaranteed.get_or_create(&l).set(s.guaranteed_rate_bps as i64);
        rate.get_or_create(&l).set(s.rate_bps as i64);
        for (reason, n) in [("deadline", s.drops.deadline_packets), ("frame", s.drops.frame_packets), ("qdisc", s.drops.qdisc_packets)] {
            drops.get_or_create(&DropLabels { cookie: l.cookie.clone(), device: l.device.clone(), classid: l.classid.clone(), reason }).inc_by(n);
        }
        for (quantile, ns) in [("0.5", s.queuing_delay.p50_ns), ("0.99", s.queuing_delay.p99_ns), ("1", s.queuing_delay.max_ns)] {
            delay.get_or_create(&DelayLabels { cookie: l.cookie.clone(), device: l.device.clone(), classid: l.classid.clone(), quantile }).set(ns as f64 / 1e9);
        }
        count.get_or_create(&DeviceLabels { device: s.device.clone() }).inc();
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

async fn scrape(State(registry): State<Arc<RwLock<Registry>>>) -> impl IntoResponse {
    let listed = registry.read().await.list(0).await;
    match listed.map_err(|e| e.to_string()).and_then(|v| render(&v).map_err(|e| e.to_string())) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Binds `addr` (errors: the bind's) and returns the task serving
/// `GET /metrics` from `registry` until the daemon stops.
pub async fn serve(addr: SocketAddr, registry: Arc<RwLock<Registry>>) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    log::info!("OpenMetrics on http://{}/metrics", listener.local_addr()?);
    let app = Router::new().route("/metrics", get(scrape)).with_state(registry);
    Ok(async move { axum::serve(listener, app).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_socket_renders_every_family_with_its_labels() {
        let s = SocketSummary {
            cookie: 7,
            uid: 1000,
            pid: 1,
            command: "x".into(),
            device: "eth0".into(),
            classid: "1:10".into(),
            scheduler: "rate".into(),
            guaranteed_rate_bps: 2_000_000,
            rate_bps: 1_500_000,
            drops: qsock::Drops { deadline_packets: 3, qdisc_packets: 1, ..Default::default() },
            queuing_delay: qsock::DelayStats { samples: 1, mean_ns: 1_000, p50_ns: 1_000, p99_ns: 2_000, max_ns: 4_000 },
            selection: None,
        };
        let text = render(&[s]).unwrap();
        assert!(
            text.contains(r#"qsock_socket_guaranteed_rate_bits_per_second{cookie="7",uid="1000",device="eth0",classid="1:10",scheduler="rate"} 2000000"#),
            "{text}"
        );
        assert!(text.contains(r#"qsock_socket_drops_packets_total{cookie="7",device="eth0",classid="1:10",reason="deadline"} 3"#), "{text}");
        assert!(text.contains(r#"quantile="0.99"} 0.000002"#), "{text}");
        assert!(text.contains(r#"qsock_managed_sockets{device="eth0"} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
