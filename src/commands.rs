//! One-shot commands that print something and exit: `signalbox invite` and
//! `signalbox credentials`. They read the same configuration and keys as the server, so what
//! they print works against the running server. Bad input is one line on stderr and exit 2.

use std::sync::Arc;
use std::time::Duration;

use crate::access::{self, AccessKey, AccessMode, Invite};
use crate::cli::{CredentialsArgs, Failure, InviteArgs};
use crate::config::{parse_duration, Config, ConfigError, Source};
use crate::credentials::ice::{IceEndpoints, TurnTransport};
use crate::credentials::{unix_now, Minter, UserPart};
use crate::signaling::protocol::MAX_NAME_CHARS;
use crate::web::host_port;
use signalbox_turn_proto::auth::Secrets;

/// `signalbox invite ROOM [--ttl 24h] [--name NAME] [--host]`: prints
/// `https://HOST[:PORT]/r/ROOM#token=T`; with `--space`, `https://HOST[:PORT]/s/SPACE#token=T`.
pub fn invite(config: &Config, source: &Source, args: &InviteArgs) -> Result<(), Failure> {
    let what = if args.space { "space" } else { "room" };
    if !crate::signaling::protocol::is_valid_room(&args.room) {
        return Err(Failure::Usage(format!(
            "invite: `{}` is not a {what} name (1-64 letters, digits, `-`, `_` or `.`)",
            args.room
        )));
    }
    let ttl = ttl_arg("invite", &args.ttl)?;
    if let Some(name) = &args.name {
        if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(Failure::Usage(format!(
                "invite: --name must be 1-{MAX_NAME_CHARS} characters"
            )));
        }
    }
    let path = config.access.key_path(&config.tls.generated_dir);
    let key = AccessKey::load_or_create(&path).map_err(|e| {
        Failure::Config(ConfigError::new(
            &source.name,
            Some("access.key_file"),
            e.to_string(),
        ))
    })?;
    let target = match args.space {
        true => access::space_target(&args.room),
        false => args.room.clone(),
    };
    let invite = Invite {
        room: target,
        expiry: unix_now().saturating_add(ttl.as_secs()),
        name: args.name.clone(),
        host: args.host,
    };
    let token = access::sign(&key, &invite);
    let host = host_port(&config.server.public_host, config.http.listen.port());
    let path = if args.space { "s" } else { "r" };
    println!("https://{host}/{path}/{}#token={token}", args.room);
    if config.access.mode == AccessMode::Open {
        eprintln!(
            "signalbox: note: [access] mode is \"open\", so the {what} is open to anyone with \
             its name; the token matters once mode = \"token\""
        );
    }
    Ok(())
}

/// `signalbox credentials [--ttl 1h] [--user NAME]`: prints `username`, `password`, `ttl` and
/// the TURN URIs, one `key: value` per line.
pub fn credentials(config: &Config, args: &CredentialsArgs) -> Result<(), Failure> {
    let ttl = ttl_arg("credentials", &args.ttl)?;
    let user = match &args.user {
        None => None,
        Some(u) => Some(UserPart::custom(u).ok_or_else(|| {
            Failure::Usage(
                "credentials: --user must be 1-128 bytes without spaces, control characters or `~` \
                 (reserved for the peers of a room)"
                    .into(),
            )
        })?),
    };
    let turn = &config.turn;
    if turn.secrets.is_empty() {
        return Err(Failure::Usage(
            "credentials: [turn] secrets is empty, so the server makes a new secret at every \
             start; set one to mint credentials outside the server"
                .into(),
        ));
    }
    let list = turn.secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    let secrets = Secrets::new(list).map_err(|e| Failure::Usage(format!("credentials: {e}")))?;
    let minter = Minter::new(Arc::new(secrets), turn.separator());
    let c = minter.mint(user.as_ref(), unix_now(), ttl);
    let mut endpoints = IceEndpoints::new(&config.server.public_host);
    if turn.enabled {
        for addr in &turn.listen {
            endpoints.add_turn(TurnTransport::Udp, addr.port());
        }
        for addr in &turn.listen_tcp {
            endpoints.add_turn(TurnTransport::Tcp, addr.port());
        }
        for addr in &turn.listen_tls {
            endpoints.add_turn(TurnTransport::Tls, addr.port());
        }
        if turn.one_port {
            endpoints.add_turn(TurnTransport::TlsOnHttpsPort, config.http.listen.port());
        }
    }
    println!("username: {}", c.username);
    println!("password: {}", c.password);
    println!("ttl: {}", c.ttl);
    for uri in endpoints.stun_uris().iter().chain(&endpoints.turn_uris()) {
        println!("uri: {uri}");
    }
    Ok(())
}

fn ttl_arg(command: &str, text: &str) -> Result<Duration, Failure> {
    match parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(Failure::Usage(format!(
            "{command}: --ttl must be at least 1s"
        ))),
        Err(e) => Err(Failure::Usage(format!("{command}: --ttl {e}"))),
    }
}
