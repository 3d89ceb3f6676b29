//! Signaling's ICE candidate and webrtc-rs's, both ways (the SFU and the client use both).

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
