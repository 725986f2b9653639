//! What the daemon knows, with no kernel calls: the managed sockets and
//! their indexes, the books that carry them over a restart, per-user
//! limits, and the facts of a socket handed over by a client.
pub mod books;
pub mod limits;
pub mod sockets;
pub mod sockinfo;
