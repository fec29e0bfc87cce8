//! A scripted SPICE server for drawing tests: it speaks just enough of the
//! protocol (link stage with a real RSA key, SPICE_MSG_MAIN_INIT,
//! SPICE_MSG_MAIN_CHANNELS_LIST) for spice-gtk to open one display channel
//! (and a cursor channel when it has cursor messages), then sends the
//! messages it was given and keeps the connections open. It lets spice-gtk
//! and spicetap draw messages QEMU never sends. A message of type
//! [`SLEEP`] is not sent: the server waits its body (u32 LE) milliseconds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// Message types used here (spice-protocol `enums.h`).
const MAIN_INIT: u16 = 103;
const MAIN_CHANNELS_LIST: u16 = 104;

fn mini(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// Not a message: the server pauses for its body's u32 LE milliseconds.
pub const SLEEP: u16 = 0xffff;
/// Not a message: the server writes its body as it is (no header), e.g.
/// half a message.
pub const RAW: u16 = 0xfffe;
/// Not a message: the server aborts the connection with a TCP reset
/// (`SO_LINGER` 0), whatever it was in the middle of.
pub const RESET: u16 = 0xfffd;
/// Not a message: the server stops reading (and writing) for its body's
/// u32 LE milliseconds, then resets the connection.
pub const STALL: u16 = 0xfffc;

/// The bytes a client receives from a script up to its first [`RESET`] or
/// [`STALL`]: each message with its mini header, [`RAW`] bodies as they are.
pub fn wire_bytes(messages: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ty, body) in messages {
        match *ty {
            SLEEP => {}
            RAW => out.extend_from_slice(body),
            RESET | STALL => break,
            _ => out.extend_from_slice(&mini(*ty, body)),
        }
    }
    out
}

/// The listening fake server; its threads end with the test process.
pub struct FakeServer {
    pub port: u16,
}

impl FakeServer {
    /// Serves `display` (type, body) messages on each display channel.
    pub fn start(display: Vec<(u16, Vec<u8>)>) -> Self {
        Self::start_with_cursor(display, Vec::new())
    }

    /// Serves `display` messages on each display channel and, when there
    /// are any, lists a cursor channel and serves it `cursor`.
    pub fn start_with_cursor(display: Vec<(u16, Vec<u8>)>, cursor: Vec<(u16, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (display, cursor) = (display.clone(), cursor.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &display, &cursor);
                });
            }
        });
        Self { port }
    }
}

/// Sends `messages`, acting on the pseudo-types [`SLEEP`], [`RAW`],
/// [`RESET`] and [`STALL`].
fn send(s: &mut TcpStream, messages: &[(u16, Vec<u8>)]) -> std::io::Result<()> {
    let millis =
        |body: &[u8]| std::time::Duration::from_millis(u32::from_le_bytes(body[..4].try_into().unwrap()).into());
    for (ty, body) in messages {
        match *ty {
            SLEEP => std::thread::sleep(millis(body)),
            RAW => s.write_all(body)?,
            RESET | STALL => {
                if *ty == STALL {
                    std::thread::sleep(millis(body));
                }
                socket2::SockRef::from(&*s).set_linger(Some(std::time::Duration::ZERO))?;
                return Err(std::io::Error::other("reset"));
            }
            _ => s.write_all(&mini(*ty, body))?,
        }
    }
    Ok(())
}

/// The server's side of a link stage with `public_der` as its key (any
/// ticket is taken): reads the link message, answers a link reply (one
/// caps word: AUTH_SELECTION, AUTH_SPICE, MINI_HEADER) and, after the
/// mechanism and ticket, `SPICE_LINK_ERR_OK`. Returns the client's
/// `connection_id` and `channel_type`.
pub fn accept_link(s: &mut TcpStream, public_der: &[u8]) -> std::io::Result<(u32, u8)> {
    let mut header = [0u8; 16];
    s.read_exact(&mut header)?;
    let size = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    let mut mess = vec![0u8; size];
    s.read_exact(&mut mess)?;
    let mut reply = Vec::new();
    reply.extend_from_slice(&0u32.to_le_bytes());
    reply.extend_from_slice(public_der);
    for v in [1u32, 0, 178, 0b1011] {
        reply.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = b"REDQ".to_vec();
    for v in [2u32, 2, reply.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&reply);
    s.write_all(&out)?;
    let mut mech_ticket = [0u8; 4 + 128];
    s.read_exact(&mut mech_ticket)?;
    s.write_all(&0u32.to_le_bytes())?;
    Ok((u32::from_le_bytes(mess[..4].try_into().unwrap()), mess[4]))
}

fn serve(mut s: TcpStream, display: &[(u16, Vec<u8>)], cursor: &[(u16, Vec<u8>)]) -> std::io::Result<()> {
    let key = spicetap::auth::ticket::LinkKey::generate().unwrap();
    let (_, channel_type) = accept_link(&mut s, key.public_der())?;
    match channel_type {
        1 => {
            let init: Vec<u8> = [4242u32, 1, 3, 1, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
            s.write_all(&mini(MAIN_INIT, &init))?;
            let mut list = if cursor.is_empty() { 1u32 } else { 2 }.to_le_bytes().to_vec();
            list.extend_from_slice(&[2, 0]);
            if !cursor.is_empty() {
                list.extend_from_slice(&[4, 0]);
            }
            s.write_all(&mini(MAIN_CHANNELS_LIST, &list))?;
        }
        2 => send(&mut s, display)?,
        4 => send(&mut s, cursor)?,
        _ => {}
    }
    // Keep the channel open, discarding what the client sends.
    let mut buf = [0u8; 4096];
    while s.read(&mut buf)? > 0 {}
    Ok(())
}
