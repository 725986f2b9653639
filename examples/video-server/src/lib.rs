//! qsock video example: a real H.264 file streamed as RTP over a qsock
//! socket (I-frames non-droppable, frame boundaries marked), a receiver that
//! counts frames, and the side-by-side demo under a bulk TCP perturbation;
//! the DWCS experiments: Q.Sockets Fig. 6 (two DWCS video streams and an
//! unmanaged one) and a window test over synthetic periodic streams.
#![warn(missing_docs)]
pub mod adapt;
pub mod envelope;
pub mod h264;
pub mod plot;
pub mod poll;
pub mod report;
pub mod rtpstream;
pub mod sdp;
pub mod session;
pub mod streams;
