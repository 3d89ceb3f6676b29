pub mod bundle_policy;
pub mod ice_transport_policy;
pub mod rtcp_mux_policy;
pub mod sdp_semantics;
