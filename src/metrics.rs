//! Prometheus metrics of a proxy (`GET /metrics` on `--http`), in the text
//! exposition format of `prometheus-client`.
//!
//! Names follow Prometheus' conventions: a `spicetap_` prefix, units in the
//! name (`_bytes_total`, `_seconds`), `_total` on counters. Nothing here
//! sits on the forwarding path per byte: channel counters are folded in
//! when a channel's link stage ends and when it closes (a handful of
//! atomic additions per connection), and the capture queue gauge is read
//! from the live sessions when `/metrics` is scraped.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `spicetap_channel_connections_open` | gauge | `channel` |
//! | `spicetap_channel_connections_total` | counter | `channel` |
//! | `spicetap_sessions_open` | gauge | |
//! | `spicetap_sessions_total` | counter | |
//! | `spicetap_forwarded_bytes_total` | counter | `channel`, `direction` (`c2s`, `s2c`) |
//! | `spicetap_link_errors_total` | counter | `code` (`SPICE_LINK_ERR_*`) |
//! | `spicetap_tls_handshakes_total` | counter | `leg` (`client`, `upstream`), `result` (`ok`, `failed`) |
//! | `spicetap_token_logins_total` | counter | `result` (`allowed`, `denied`) |
//! | `spicetap_capture_queue_bytes` | gauge | |
//! | `spicetap_capture_losses_total` | counter | |
//! | `spicetap_renderer_stops_total` | counter | |
//! | `spicetap_video_frames_encoded_total` | counter | |
//! | `spicetap_video_frames_dropped_total` | counter | |
//! | `spicetap_link_stage_duration_seconds` | histogram | |

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A channel type label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// `main`, `display`, ... (spice-protocol names, lower case).
    pub channel: String,
}

/// A channel type and direction label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `main`, `display`, ...
    pub channel: String,
    /// `c2s` or `s2c`.
    pub direction: &'static str,
}

/// A link error label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// `SPICE_LINK_ERR_*`.
    pub code: String,
}

/// A TLS handshake label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabel {
    /// `client` (spicetap's server side) or `upstream`.
    pub leg: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `allowed` or `denied`.
    pub result: &'static str,
}

/// The metrics of one proxy, shared by its tasks and threads.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    channels_open: Family<ChannelLabel, Gauge>,
    channels_total: Family<ChannelLabel, Counter>,
    sessions_open: Gauge,
    sessions_total: Counter,
    forwarded_bytes: Family<DirectionLabel, Counter>,
    link_errors: Family<CodeLabel, Counter>,
    tls_handshakes: Family<TlsLabel, Counter>,
    token_logins: Family<ResultLabel, Counter>,
    capture_queue_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    capture_losses: Counter,
    renderer_stops: Counter,
    video_frames_encoded: Counter<u64, AtomicU64>,
    video_frames_dropped: Counter<u64, AtomicU64>,
    link_stage_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spicetap");
        let m = Self {
            channels_open: Family::default(),
            channels_total: Family::default(),
            sessions_open: Gauge::default(),
            sessions_total: Counter::default(),
            forwarded_bytes: Family::default(),
            link_errors: Family::default(),
            tls_handshakes: Family::default(),
            token_logins: Family::default(),
            capture_queue_bytes: Gauge::default(),
            capture_losses: Counter::default(),
            renderer_stops: Counter::default(),
            video_frames_encoded: Counter::default(),
            video_frames_dropped: Counter::default(),
            // 1 ms .. ~16 s.
            link_stage_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            registry: Registry::default(),
        };
        registry.register("channel_connections_open", "Channel connections open", m.channels_open.clone());
        // prometheus-client adds `_total` to counters.
        registry.register("channel_connections", "Channel connections accepted and linked", m.channels_total.clone());
        registry.register("sessions_open", "SPICE sessions with a channel open", m.sessions_open.clone());
        registry.register("sessions", "SPICE sessions seen", m.sessions_total.clone());
        registry.register(
            "forwarded_bytes",
            "Bytes forwarded, by channel type and direction (counted when a channel closes)",
            m.forwarded_bytes.clone(),
        );
        registry.register("link_errors", "Link stages that ended in a SPICE link error", m.link_errors.clone());
        registry.register("tls_handshakes", "TLS handshakes, by leg and result", m.tls_handshakes.clone());
        registry.register("token_logins", "Token-mode logins, by result", m.token_logins.clone());
        registry.register(
            "capture_queue_bytes",
            "Bytes waiting for the sessions' capture writers",
            m.capture_queue_bytes.clone(),
        );
        registry.register("capture_losses", "Channels whose capture stopped early", m.capture_losses.clone());
        registry.register("renderer_stops", "Sessions whose renderer stopped early", m.renderer_stops.clone());
        registry.register("video_frames_encoded", "Video frames encoded", m.video_frames_encoded.clone());
        registry.register(
            "video_frames_dropped",
            "Video frames dropped by the encoder",
            m.video_frames_dropped.clone(),
        );
        registry.register_with_unit(
            "link_stage_duration",
            "Time from accepting a connection to the end of its link stage",
            prometheus_client::registry::Unit::Seconds,
            m.link_stage_duration.clone(),
        );
        Self { registry, ..m }
    }

    fn channel(channel: &str) -> ChannelLabel {
        ChannelLabel { channel: channel.to_string() }
    }

    /// A channel finished its link stage after `took`.
    pub fn channel_linked(&self, channel: &str, took: Duration) {
        self.channels_open.get_or_create(&Self::channel(channel)).inc();
        self.channels_total.get_or_create(&Self::channel(channel)).inc();
        self.link_stage_duration.observe(took.as_secs_f64());
    }

    /// A linked channel closed after forwarding these bytes.
    pub fn channel_closed(&self, channel: &str, c2s: u64, s2c: u64, capture_lost: bool) {
        self.channels_open.get_or_create(&Self::channel(channel)).dec();
        for (direction, n) in [("c2s", c2s), ("s2c", s2c)] {
            self.forwarded_bytes.get_or_create(&DirectionLabel { channel: channel.to_string(), direction }).inc_by(n);
        }
        if capture_lost {
            self.capture_losses.inc();
        }
    }

    /// A link stage ended with `code` (`SPICE_LINK_ERR_*`).
    pub fn link_error(&self, code: &str) {
        self.link_errors.get_or_create(&CodeLabel { code: code.to_string() }).inc();
    }

    /// A TLS handshake on `leg` (`client` or `upstream`) ended.
    pub fn tls_handshake(&self, leg: &'static str, ok: bool) {
        self.tls_handshakes.get_or_create(&TlsLabel { leg, result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// A token login was allowed or denied.
    pub fn token_login(&self, allowed: bool) {
        self.token_logins.get_or_create(&ResultLabel { result: if allowed { "allowed" } else { "denied" } }).inc();
    }

    /// A session started.
    pub fn session_started(&self) {
        self.sessions_open.inc();
        self.sessions_total.inc();
    }

    /// A session ended.
    pub fn session_ended(&self) {
        self.sessions_open.dec();
    }

    /// A session's renderer stopped early.
    pub fn renderer_stopped(&self) {
        self.renderer_stops.inc();
    }

    /// A display's video finished with these frame counts.
    pub fn video_finished(&self, encoded: u64, dropped: u64) {
        self.video_frames_encoded.inc_by(encoded);
        self.video_frames_dropped.inc_by(dropped);
    }

    /// Sets the capture queue gauge (read from the live sessions at scrape
    /// time).
    pub fn set_capture_queue_bytes(&self, bytes: u64) {
        self.capture_queue_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The text exposition (`text/plain; version=0.0.4` compatible
    /// OpenMetrics text).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_units_and_totals() {
        let m = Metrics::new();
        m.channel_linked("display", Duration::from_millis(3));
        m.channel_closed("display", 100, 2000, false);
        m.link_error("SPICE_LINK_ERR_PERMISSION_DENIED");
        m.tls_handshake("client", true);
        m.token_login(false);
        m.session_started();
        let text = m.encode();
        for want in [
            "spicetap_channel_connections_open{channel=\"display\"} 0",
            "spicetap_channel_connections_total{channel=\"display\"} 1",
            "spicetap_forwarded_bytes_total{channel=\"display\",direction=\"s2c\"} 2000",
            "spicetap_link_errors_total{code=\"SPICE_LINK_ERR_PERMISSION_DENIED\"} 1",
            "spicetap_tls_handshakes_total{leg=\"client\",result=\"ok\"} 1",
            "spicetap_token_logins_total{result=\"denied\"} 1",
            "spicetap_sessions_open 1",
            "spicetap_link_stage_duration_seconds_count 1",
            "spicetap_capture_queue_bytes 0",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }
}
