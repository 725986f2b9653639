//! RTP packetization of frames (RFC 6184, single NAL / STAP-A / FU-A by
//! the `rtp` crate's H.264 payloader). Deterministic for a given file and
//! MTU, so the receiver can rebuild each frame's packet count.
use anyhow::Result;
use bytes::Bytes;
use rtp::{
    codecs::h264::H264Payloader,
    packetizer::{new_packetizer, Packetizer},
    sequence::new_fixed_sequencer,
};
use webrtc_util::marshal::Marshal;

use crate::h264::{Frame, FrameKind};

/// RTP payload type used for H.264 (dynamic range).
pub const PAYLOAD_TYPE_H264: u8 = 96;
/// RTP payload type of the end-of-stream marker.
pub const PAYLOAD_TYPE_END: u8 = 127;
/// Frames by which presentation trails decoding in the RTP timestamps: a
/// B-frame is shown before the reference sent ahead of it.
pub const PRESENTATION_DELAY_FRAMES: u32 = 2;
/// Largest RTP datagram the sender and receiver use by default, bytes.
pub const DEFAULT_MTU: usize = 1200;
/// RTP clock rate for video, Hz.
pub const CLOCK_RATE: u32 = 90_000;
/// Synchronisation source of the demo stream.
pub const SSRC: u32 = 0x5153_4f43;

/// One frame as RTP packets ready to send.
pub struct RtpFrame {
    /// Decode-order index.
    pub index: usize,
    /// Frame type.
    pub kind: FrameKind,
    /// Other frames may predict from it.
    pub reference: bool,
    /// Marshalled RTP packets; the last has the marker bit.
    pub packets: Vec<Bytes>,
}

impl RtpFrame {
    /// The frame's size on an Ethernet link over IPv4 (every packet with its
    /// UDP, IP and Ethernet headers), bytes.
    pub fn wire_bytes(&self) -> u64 {
        self.packets.iter().map(|p| qsock::datagram_wire_bytes(p.len(), false) as u64).sum()
    }
}

/// Packetizes `frames` for datagrams of at most `mtu` bytes (RTP header
/// included) at `fps` frames/s (timestamp step 90000 / fps).
pub fn packetize(frames: &[Frame], mtu: usize, fps: u32) -> Result<Vec<RtpFrame>> {
    let mut p = new_packetizer(mtu, PAYLOAD_TYPE_H264, SSRC, Box::new(H264Payloader::default()), Box::new(new_fixed_sequencer(0)), CLOCK_RATE);
    let step = CLOCK_RATE / fps;
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let mut pkts = p.packetize(&Bytes::copy_from_slice(&f.annexb), step)?;
        // The RTP timestamp is the frame's presentation time (RFC 6184 §5.1);
        // with B-frames it is not monotonic in sending (decode) order.
        // Presentation lags decoding by the B-frame delay, so keep it ahead.
        let pts = (f.display_index as u32 + PRESENTATION_DELAY_FRAMES).wrapping_mul(step);
        for pk in pkts.iter_mut() {
            pk.header.timestamp = pts;
        }
        let packets = pkts.iter().map(|pk| pk.marshal()).collect::<std::result::Result<Vec<_>, _>>()?;
        out.push(RtpFrame { index: f.index, kind: f.kind, reference: f.reference, packets });
    }
    Ok(out)
}
