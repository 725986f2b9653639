//! qsock sensor example: aperiodic readings with per-message deadlines,
//! sent with lossy or lossless EDF. Implemented with the EDF scheduler
//! module (issue 3); this crate reserves its place in the workspace.
