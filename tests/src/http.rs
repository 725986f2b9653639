//! Plain HTTP/1.1 over a stream the test holds (an MPTCP socket whose
//! subflows it controls, which no HTTP client library exposes): a GET and
//! its response head, parsed by httparse; the body is the caller's.
use std::{io::Write, net::TcpStream};

use testbed::multihomed::SERVICE_IP;

/// Sends a keep-alive `GET /path` on `s` and reads the response head.
/// Returns the `Content-Length` and the body bytes read with the head.
/// Panics on a status other than 200, a missing `Content-Length`, or a
/// connection that closes or fails first.
pub fn get_head(s: &mut TcpStream, path: &str) -> (usize, Vec<u8>) {
    s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {SERVICE_IP}\r\n\r\n").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = crate::read_some(s, &mut chunk).unwrap();
        assert!(n > 0, "the server closed before its response head to /{path}");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(&buf).unwrap() {
            assert_eq!(resp.code, Some(200), "/{path}");
            let cl = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length")).expect("Content-Length");
            let length = std::str::from_utf8(cl.value).unwrap().parse::<usize>().unwrap();
            return (length, buf.split_off(len));
        }
    }
}
