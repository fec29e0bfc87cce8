//! Authentication in token mode (`--auth tokens --targets FILE`).
//!
//! spicetap answers the link stage itself with a fresh RSA key
//! ([`ticket`]), reads the client's ticket as a token, finds the VM it leads
//! to ([`targets`]), and authenticates to that VM with the VM's own password.
//! Failures are rate-limited per client address ([`ratelimit`]) and every
//! decision goes to the audit log ([`audit`]).

pub mod audit;
pub mod ratelimit;
pub mod targets;
pub mod ticket;
