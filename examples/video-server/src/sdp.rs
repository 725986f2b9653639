//! The SDP an ordinary RTP client (ffmpeg) needs to receive the stream
//! (RFC 4566, H.264 payload format RFC 6184 §8.1).
use base64::{engine::general_purpose::STANDARD, Engine as _};
use sdp::description::{
    common::{Address, ConnectionInformation},
    media::{MediaDescription, MediaName, RangedPort},
    session::{Origin, SessionDescription, SessionName, TimeDescription, Timing},
};

use crate::{
    h264::ParameterSets,
    rtpstream::{CLOCK_RATE, PAYLOAD_TYPE_H264},
};

/// SDP for the H.264 RTP stream arriving at `addr:port` (IPv4), with the
/// stream's parameter sets in `sprop-parameter-sets` so the client can
/// decode from the first frame that arrives.
pub fn h264_sdp(addr: std::net::Ipv4Addr, port: u16, sets: &ParameterSets) -> String {
    let sprop = format!("{},{}", STANDARD.encode(&sets.sps), STANDARD.encode(&sets.pps));
    let ip4 = |a: std::net::Ipv4Addr| ConnectionInformation {
        network_type: "IN".into(),
        address_type: "IP4".into(),
        address: Some(Address { address: a.to_string(), ttl: None, range: None }),
    };
    let media = MediaDescription {
        media_name: MediaName {
            media: "video".into(),
            port: RangedPort { value: port as isize, range: None },
            protos: vec!["RTP".into(), "AVP".into()],
            formats: Vec::new(),
        },
        ..Default::default()
    }
    .with_codec(PAYLOAD_TYPE_H264, "H264".into(), CLOCK_RATE, 0, format!("packetization-mode=1;sprop-parameter-sets={sprop}"));
    SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: 0,
            session_version: 0,
            network_type: "IN".into(),
            address_type: "IP4".into(),
            unicast_address: addr.to_string(),
        },
        session_name: SessionName::from("qsock video"),
        connection_information: Some(ip4(addr)),
        time_descriptions: vec![TimeDescription { timing: Timing { start_time: 0, stop_time: 0 }, repeat_times: Vec::new() }],
        ..Default::default()
    }
    .with_media(media)
    .marshal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sdp_carries_the_parameter_sets() {
        let sets = crate::h264::ParameterSets { sps: vec![0x67, 1, 2], pps: vec![0x68, 3] };
        let s = super::h264_sdp("127.0.0.1".parse().unwrap(), 5006, &sets);
        for line in ["v=0", "c=IN IP4 127.0.0.1", "t=0 0", "m=video 5006 RTP/AVP 96", "a=rtpmap:96 H264/90000"] {
            assert!(s.contains(line), "{line:?} missing in {s}");
        }
        assert!(s.contains("sprop-parameter-sets=ZwEC,aAM="), "{s}");
    }
}
