//! systemd notification (`Type=notify`): `READY=1` once running, `STATUS=` with the phase,
//! `STOPPING=1` on the way out. Silent without `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

use states::PhaseName;

/// Tells systemd about a new phase.
pub fn phase(phase: PhaseName) {
    let mut message = format!("STATUS=phase {phase}\n");
    match phase {
        PhaseName::Running => message.push_str("READY=1\n"),
        PhaseName::Terminating => message.push_str("STOPPING=1\n"),
        _ => {}
    }
    send(&message);
}

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
    } else {
        socket.send_to(message.as_bytes(), &path)
    };
    if let Err(e) = sent {
        log::debug!("cannot notify systemd: {e}");
    }
}
