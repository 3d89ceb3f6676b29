//! The live-class reference: the same rooms against Janus (Debian `janus`, videoroom
//! plugin) through its WebSocket API, with the same webrtc-rs clients and generated media
//! as against `preau-sfu`, so the figures of both come out of one measurement.
//!
//! Each room: the teacher publishes three simulcast layers and audio; S pupils publish
//! audio; every pupil subscribes (multistream) to the teacher (middle layer, as the small
//! tiles of `preau-sfu`'s layout) and to the speakers other than itself; the teacher
//! subscribes to the speakers. Janus offers, the client answers; both sides put their
//! candidates in the SDP (no trickle), which Janus accepts.

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use parking_lot::Mutex;
use preau_live::client::{Latency, Publication, Received, add_generated_tracks, api, record_tracks, spawn_text_writer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use webrtc::api::API;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// One Janus session over one WebSocket (`janus-protocol`).
struct Session {
    out: mpsc::Sender<String>,
    waiters: Waiters,
    next: AtomicU64,
    id: u64,
}

impl Session {
    async fn connect(url: &str) -> anyhow::Result<Arc<Session>> {
        let mut req = url.into_client_request()?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(req).await.context("Janus WebSocket")?;
        let (sink, mut stream) = ws.split();
        let out = spawn_text_writer(sink, 256);
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let w2 = waiters.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                // An `ack` only says an asynchronous request was queued; its `event`
                // follows with the same transaction.
                if v["janus"] == "ack" {
                    continue;
                }
                if let Some(tx) = v["transaction"].as_str().and_then(|t| w2.lock().remove(t)) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut s = Session { out, waiters, next: AtomicU64::new(1), id: 0 };
        let created = s.call(json!({"janus":"create"})).await?;
        s.id = created["data"]["id"].as_u64().context("Janus create: no session id")?;
        let s = Arc::new(s);
        // Janus drops a session silent for 60 s.
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let Some(s) = weak.upgrade() else { break };
                let _ = s.out.send(json!({"janus":"keepalive","session_id":s.id,"transaction":"ka"}).to_string()).await;
            }
        });
        Ok(s)
    }

    /// Sends a request and waits for its answer (`success`, `event` or `error`).
    async fn call(&self, mut req: Value) -> anyhow::Result<Value> {
        let t = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        req["transaction"] = json!(t);
        if self.id != 0 {
            req["session_id"] = json!(self.id);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(t.clone(), tx);
        self.out.send(req.to_string()).await?;
        let v = tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .map_err(|_| anyhow!("Janus did not answer {req}"))??;
        if v["janus"] == "error" {
            bail!("Janus error: {}", v["error"]);
        }
        if let Some(code) = v["plugindata"]["data"]["error_code"].as_u64() {
            bail!("videoroom error {code}: {}", v["plugindata"]["data"]["error"]);
        }
        Ok(v)
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let v = self.call(json!({"janus":"attach","plugin":"janus.plugin.videoroom"})).await?;
        v["data"]["id"].as_u64().context("Janus attach: no handle id")
    }

    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> anyhow::Result<Value> {
        let mut req = json!({"janus":"message","handle_id":handle,"body":body});
        if let Some(j) = jsep {
            req["jsep"] = j;
        }
        self.call(req).await
    }
}

/// The local description once ICE gathering is complete (candidates inside).
async fn gathered(pc: &Arc<RTCPeerConnection>) -> anyhow::Result<String> {
    let mut done = pc.gathering_complete_promise().await;
    tokio::time::timeout(Duration::from_secs(10), done.recv()).await.context("ICE gathering")?;
    Ok(pc.local_description().await.context("no local description")?.sdp)
}

/// Waits for the connection to be up (ICE and DTLS).
async fn connected(pc: &Arc<RTCPeerConnection>) -> anyhow::Result<()> {
    for _ in 0..200 {
        if pc.connection_state() == RTCPeerConnectionState::Connected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not connected after 10 s ({})", pc.connection_state())
}

/// A publisher in a Janus room: its feed id and what it sends.
struct Publisher {
    feed: u64,
    _pc: Arc<RTCPeerConnection>,
    _publication: Publication,
}

async fn publish(
    s: &Session,
    api: &API,
    room: u64,
    name: u64,
    layers: &[(&str, usize)],
    level: u8,
) -> anyhow::Result<Publisher> {
    let h = s.attach().await?;
    let joined = s
        .message(h, json!({"request":"join","ptype":"publisher","room":room,"display":name.to_string()}), None)
        .await?;
    let feed = joined["plugindata"]["data"]["id"].as_u64().context("videoroom join: no feed id")?;
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let (publication, _) = add_generated_tracks(&pc, name, layers, Some(level)).await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let sdp = gathered(&pc).await?;
    let v = s
        .message(
            h,
            json!({"request":"publish","audiocodec":"opus","videocodec":"vp8"}),
            Some(json!({"type":"offer","sdp":sdp,"trickle":false})),
        )
        .await?;
    let answer = v["jsep"]["sdp"].as_str().context("videoroom publish: no answer")?;
    pc.set_remote_description(RTCSessionDescription::answer(answer.to_owned())?).await?;
    // Janus offers a feed to subscribers only once its media is up.
    connected(&pc).await.context("publisher connection")?;
    Ok(Publisher { feed, _pc: pc, _publication: publication })
}

/// A subscription to some feeds: what it received.
pub struct Subscriber {
    /// What arrived, by track.
    pub received: Received,
    /// Latency of what arrived.
    pub latency: Latency,
    _pc: Arc<RTCPeerConnection>,
}

async fn subscribe(s: &Session, api: &API, room: u64, streams: Vec<Value>) -> anyhow::Result<Subscriber> {
    let h = s.attach().await?;
    let v = s.message(h, json!({"request":"join","ptype":"subscriber","room":room,"streams":streams}), None).await?;
    let offer = v["jsep"]["sdp"].as_str().context("videoroom subscribe: no offer")?;
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let received: Received = Arc::new(Mutex::new(HashMap::new()));
    let latency: Latency = Arc::new(Mutex::new(hdrhistogram::Histogram::new(3)?));
    record_tracks(&pc, received.clone(), latency.clone());
    pc.set_remote_description(RTCSessionDescription::offer(offer.to_owned())?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let sdp = gathered(&pc).await?;
    s.message(h, json!({"request":"start"}), Some(json!({"type":"answer","sdp":sdp,"trickle":false}))).await?;
    Ok(Subscriber { received, latency, _pc: pc })
}

/// A room's load against Janus.
pub struct JanusRoom {
    /// The pupils' subscriptions.
    pub pupils: Vec<Subscriber>,
    /// The teacher's subscription to the speakers.
    pub teacher: Option<Subscriber>,
    _publishers: Vec<Publisher>,
    _session: Arc<Session>,
}

/// Creates room `r` on Janus at `url` and joins it: a teacher, `pupils` pupils of whom
/// `speakers` speak.
pub async fn join_room(url: &str, r: usize, pupils: usize, speakers: usize) -> anyhow::Result<JanusRoom> {
    let s = Session::connect(url).await?;
    let api = api()?;
    // Rooms outlive a run in Janus: ids unique to this process.
    let room = u64::from(std::process::id()) * 1000 + r as u64;
    let admin = s.attach().await?;
    s.message(
        admin,
        json!({"request":"create","room":room,"publishers":speakers + 1,"audiolevel_ext":true,
               "videocodec":"vp8","audiocodec":"opus","bitrate":0,"permanent":false}),
        None,
    )
    .await
    .context("videoroom create")?;
    let base = (r as u64 + 1) * 10_000;
    let teacher = publish(&s, &api, room, base, &[("q", 250), ("h", 700), ("f", 1150)], 25).await?;
    let mut speaking = Vec::with_capacity(speakers);
    for p in 0..speakers.min(pupils) {
        speaking.push(publish(&s, &api, room, base + 1 + p as u64, &[], 35).await?);
    }
    let mut subs = Vec::with_capacity(pupils);
    for p in 0..pupils {
        let mut streams = vec![json!({"feed":teacher.feed,"substream":1})];
        streams.extend(speaking.iter().enumerate().filter(|(i, _)| *i != p).map(|(_, sp)| json!({"feed":sp.feed})));
        subs.push(subscribe(&s, &api, room, streams).await.with_context(|| format!("pupil {p} subscribe"))?);
    }
    let teacher_sub = if speaking.is_empty() {
        None
    } else {
        Some(subscribe(&s, &api, room, speaking.iter().map(|sp| json!({"feed":sp.feed})).collect()).await?)
    };
    let mut publishers = vec![teacher];
    publishers.extend(speaking);
    Ok(JanusRoom { pupils: subs, teacher: teacher_sub, _publishers: publishers, _session: s })
}
