//! The SDP an ordinary RTP client (ffmpeg) needs to receive the stream
//! (RFC 4566, H.264 payload format RFC 6184 §8.1).
use base64::{engine::general_purpose::STANDARD, Engine as _};

use crate::{h264::ParameterSets, rtpstream::PAYLOAD_TYPE_H264};

/// SDP for the H.264 RTP stream arriving at `addr:port` (IPv4), with the
/// stream's parameter sets in `sprop-parameter-sets` so the client can
/// decode from the first frame that arrives.
pub fn h264_sdp(addr: std::net::Ipv4Addr, port: u16, sets: &ParameterSets) -> String {
    let sprop = format!("{},{}", STANDARD.encode(&sets.sps), STANDARD.encode(&sets.pps));
    format!(
        "v=0\r\no=- 0 0 IN IP4 {addr}\r\ns=qsock video\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=video {port} RTP/AVP {pt}\r\na=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} packetization-mode=1;sprop-parameter-sets={sprop}\r\n",
        pt = PAYLOAD_TYPE_H264
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sdp_carries_the_parameter_sets() {
        let sets = crate::h264::ParameterSets { sps: vec![0x67, 1, 2], pps: vec![0x68, 3] };
        let s = super::h264_sdp("127.0.0.1".parse().unwrap(), 5006, &sets);
        assert!(s.contains("m=video 5006 RTP/AVP 96"));
        assert!(s.contains("sprop-parameter-sets=ZwEC,aAM="), "{s}");
    }
}
