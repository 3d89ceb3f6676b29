//! The webrtc-rs factories of a node: two engines (one for `pub` connections, one for
//! `sub`) over one shared UDP socket (`UDPMux`), with the codecs, header extensions and
//! interceptors each side negotiates.

use preau_live::signal::AUDIO_LEVEL_URI;
use std::net::IpAddr;
use std::sync::Arc;
use webrtc::api::API;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::{configure_nack, configure_rtcp_reports, configure_twcc_receiver_only};
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMux, UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::registry::Registry;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};

const SIMULCAST_URIS: [&str; 3] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

/// How peer connections reach the network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The one UDP socket's address (all peers of the node share it).
    pub udp: std::net::SocketAddr,
    /// Addresses to announce instead of the local ones (1:1 NAT, a Kubernetes node's
    /// public address).
    pub public_ips: Vec<String>,
}

/// The two webrtc-rs factories of a node, over one shared UDP socket.
pub struct Engines {
    /// For `pub` connections: receives simulcast, sends TWCC feedback to the browser's
    /// congestion control, asks for retransmissions (NACK) and keyframes.
    pub publish: API,
    /// For `sub` connections: sends with RTX and answers NACKs from a buffer; the
    /// browser's REMB gives the bandwidth estimate that chooses layers.
    pub subscribe: API,
    /// The UDP address actually bound.
    pub udp_addr: std::net::SocketAddr,
}

fn codecs(m: &mut MediaEngine, twcc: bool) -> webrtc::error::Result<()> {
    m.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
            ..Default::default()
        },
        RTPCodecType::Audio,
    )?;
    let mut fb = vec![RTCPFeedback { typ: "ccm".into(), parameter: "fir".into() }];
    if !twcc {
        fb.push(RTCPFeedback { typ: "goog-remb".into(), parameter: String::new() });
    }
    m.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: fb,
            },
            payload_type: 96,
            ..Default::default()
        },
        RTPCodecType::Video,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: "video/rtx".to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: "apt=96".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 97,
            ..Default::default()
        },
        RTPCodecType::Video,
    )?;
    for uri in SIMULCAST_URIS {
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
            RTPCodecType::Video,
            None,
        )?;
    }
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_owned() },
        RTPCodecType::Audio,
        None,
    )?;
    Ok(())
}

impl Engines {
    /// Binds the node's UDP socket and builds both factories.
    pub async fn new(net: &NetConfig) -> anyhow::Result<Engines> {
        let sock = tokio::net::UdpSocket::bind(net.udp).await?;
        let udp_addr = sock.local_addr()?;
        let mux: Arc<dyn UDPMux + Send + Sync> = UDPMuxDefault::new(UDPMuxParams::new(sock));
        let build = |publish: bool| -> anyhow::Result<API> {
            let mut me = MediaEngine::default();
            codecs(&mut me, publish)?;
            let mut reg = Registry::new();
            reg = configure_nack(reg, &mut me);
            reg = configure_rtcp_reports(reg);
            if publish {
                reg = configure_twcc_receiver_only(reg, &mut me)?;
            }
            let mut s = SettingEngine::default();
            s.set_udp_network(UDPNetwork::Muxed(mux.clone()));
            s.set_network_types(vec![NetworkType::Udp4, NetworkType::Udp6]);
            s.enable_sender_rtx(true);
            let ip = udp_addr.ip();
            if ip.is_loopback() {
                s.set_include_loopback_candidate(true);
            }
            if !ip.is_unspecified() {
                // Only announce the address the socket is bound to.
                s.set_ip_filter(Box::new(move |c: IpAddr| c == ip));
            }
            if !net.public_ips.is_empty() {
                s.set_nat_1to1_ips(net.public_ips.clone(), RTCIceCandidateType::Host);
            }
            Ok(APIBuilder::new().with_media_engine(me).with_interceptor_registry(reg).with_setting_engine(s).build())
        };
        Ok(Engines { publish: build(true)?, subscribe: build(false)?, udp_addr })
    }
}

/// The header extension id negotiated for `uri` on a receiver's parameters.
pub fn extension_id(params: &webrtc::rtp_transceiver::rtp_codec::RTCRtpParameters, uri: &str) -> Option<u8> {
    params.header_extensions.iter().find(|h| h.uri == uri).map(|h| h.id as u8)
}

#[cfg(test)]
mod tests {
    use webrtc::stats::StatsReportType;

    /// The vendored webrtc-rs panicked (`todo!()`) on these three stats types.
    #[test]
    fn stats_types_webrtc_rs_never_produces_are_refused_not_panicked_on() {
        for ty in ["csrc", "receiver", "sender"] {
            let json = format!(r#"{{"type":"{ty}","id":"x","timestamp":0}}"#);
            let err = serde_json::from_str::<StatsReportType>(&json).expect_err(ty);
            assert!(err.to_string().contains("cannot be deserialized"), "{ty}: {err}");
        }
    }
}
