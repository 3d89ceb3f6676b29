//! Signaling's ICE candidate and webrtc-rs's, both ways (the Rust client uses both).

impl From<webrtc::ice_transport::ice_candidate::RTCIceCandidateInit> for crate::signal::Candidate {
    fn from(c: webrtc::ice_transport::ice_candidate::RTCIceCandidateInit) -> Self {
        crate::signal::Candidate { candidate: c.candidate, sdp_mid: c.sdp_mid, sdp_m_line_index: c.sdp_mline_index }
    }
}

impl From<crate::signal::Candidate> for webrtc::ice_transport::ice_candidate::RTCIceCandidateInit {
    fn from(c: crate::signal::Candidate) -> Self {
        Self {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_m_line_index,
            username_fragment: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use webrtc::stats::StatsReportType;

    /// Upstream webrtc-rs 0.17 panicked on these three stats types (placeholders where
    /// deserialisation was never written); the vendored copy (the client's) refuses them.
    #[test]
    fn stats_types_webrtc_rs_never_produces_are_refused_not_panicked_on() {
        for ty in ["csrc", "receiver", "sender"] {
            let json = format!(r#"{{"type":"{ty}","id":"x","timestamp":0}}"#);
            let err = serde_json::from_str::<StatsReportType>(&json).expect_err(ty);
            assert!(err.to_string().contains("cannot be deserialized"), "{ty}: {err}");
        }
    }
}
