//! Allocation table tests, all in virtual time.

use super::*;

const T0: Millis = Millis(1_700_000_000_000);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn tuple(port: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::from(([192, 0, 2, 1], port)),
        listener: SocketAddr::from(([127, 0, 0, 1], 3478)),
        transport: Transport::Udp,
    }
}

fn table(user_quota: u32, total_quota: u32, strict: bool) -> AllocationTable {
    AllocationTable::new(
        Arc::new(Quotas::new(user_quota, total_quota)),
        Limits {
            max_lifetime: secs(3600),
            strict_expiry: strict,
            max_bytes_per_sec: 0,
        },
    )
}

fn request(port: u16, user: &str, credential_expiry: u64) -> NewAllocation {
    NewAllocation {
        five_tuple: tuple(port),
        username: format!("{credential_expiry}:{user}").into(),
        user: user.into(),
        key: [7; 16],
        credential_expiry,
        transaction_id: [port as u8; 12],
        requested_lifetime: None,
    }
}

/// A credential valid for `s` seconds after T0.
fn valid_for(s: u64) -> u64 {
    T0.unix_secs() + s
}

fn peer(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Runs the timer as the IO loop would, up to `until`, collecting deleted allocations.
fn run_timers(t: &mut AllocationTable, until: Millis) -> Vec<(AllocId, Allocation)> {
    let mut removed = Vec::new();
    while let Some(at) = t.poll_timeout() {
        if at > until {
            break;
        }
        removed.extend(t.handle_timeout(at));
    }
    removed.extend(t.handle_timeout(until));
    removed
}

#[test]
fn an_allocation_expires_after_its_lifetime_and_frees_its_quota() {
    let mut t = table(1, 10, false);
    let id = t
        .insert(request(1, "alice", valid_for(86400)), T0)
        .expect("alloc");
    assert_eq!(t.poll_timeout(), Some(T0.plus(DEFAULT_LIFETIME)));
    assert!(run_timers(&mut t, T0.plus(secs(599))).is_empty());
    assert!(t.get(id).is_some());
    let removed = run_timers(&mut t, T0.plus(secs(600)));
    assert_eq!(removed.len(), 1);
    assert!(t.get(id).is_none());
    assert!(t.by_client(&tuple(1)).is_none());
    assert_eq!(t.poll_timeout(), None);
    t.insert(request(2, "alice", valid_for(86400)), T0.plus(secs(601)))
        .expect("quota was given back");
}

#[test]
fn requested_lifetimes_follow_rfc_8656_and_are_capped() {
    let t = table(1, 1, false);
    assert_eq!(t.desired_lifetime(None), secs(600));
    assert_eq!(t.desired_lifetime(Some(30)), secs(600));
    assert_eq!(t.desired_lifetime(Some(1200)), secs(1200));
    assert_eq!(t.desired_lifetime(Some(u32::MAX)), secs(3600));
}

#[test]
fn refresh_extends_the_lifetime() {
    let mut t = table(1, 10, false);
    let id = t
        .insert(request(1, "a", valid_for(86400)), T0)
        .expect("alloc");
    let granted = t
        .refresh(id, Some(1800), T0.plus(secs(500)))
        .expect("refresh");
    assert_eq!(granted, secs(1800));
    assert!(run_timers(&mut t, T0.plus(secs(2299))).is_empty());
    assert_eq!(run_timers(&mut t, T0.plus(secs(2300))).len(), 1);
}

#[test]
fn permissions_expire_after_five_minutes_unless_refreshed() {
    let mut t = table(1, 10, false);
    let id = t
        .insert(request(1, "a", valid_for(86400)), T0)
        .expect("alloc");
    let p = peer("8.8.8.8:5000").ip();
    let q = peer("9.9.9.9:5000").ip();
    t.add_permission(id, p, T0).expect("perm");
    t.add_permission(id, q, T0).expect("perm");
    t.add_permission(id, q, T0.plus(secs(200)))
        .expect("refresh perm");
    run_timers(&mut t, T0.plus(secs(299)));
    assert!(t.has_permission(id, p, T0.plus(secs(299))));
    run_timers(&mut t, T0.plus(secs(300)));
    assert!(!t.has_permission(id, p, T0.plus(secs(300))));
    assert!(t.has_permission(id, q, T0.plus(secs(499))));
    assert!(!t.has_permission(id, q, T0.plus(secs(500))));
}

#[test]
fn a_permission_for_the_ipv4_mapped_form_covers_the_plain_address() {
    let mut t = table(1, 10, false);
    let id = t
        .insert(request(1, "a", valid_for(86400)), T0)
        .expect("alloc");
    t.add_permission(id, peer("[::ffff:8.8.8.8]:1").ip(), T0)
        .expect("perm");
    assert!(t.has_permission(id, peer("8.8.8.8:1").ip(), T0));
}

#[test]
fn channels_last_ten_minutes_and_their_refresh_keeps_the_permission_alive() {
    let mut t = table(1, 10, false);
    let id = t
        .insert(request(1, "a", valid_for(86400)), T0)
        .expect("alloc");
    let p = peer("8.8.8.8:5000");
    t.refresh(id, Some(3600), T0).expect("refresh");
    t.bind_channel(id, 0x4000, p, T0).expect("bind");
    assert_eq!(t.channel_peer(id, 0x4000, T0), Some(p));
    assert_eq!(t.channel_for_peer(id, p, T0), Some(0x4000));
    // The permission alone would die at 300 s; a re-bind at 250 s keeps both going.
    t.bind_channel(id, 0x4000, p, T0.plus(secs(250)))
        .expect("rebind");
    run_timers(&mut t, T0.plus(secs(540)));
    assert_eq!(t.channel_peer(id, 0x4000, T0.plus(secs(540))), Some(p));
    // Without further refreshes the permission goes at 550 s and the channel at 850 s.
    run_timers(&mut t, T0.plus(secs(551)));
    assert_eq!(t.channel_peer(id, 0x4000, T0.plus(secs(551))), None);
    assert_eq!(t.channel_for_peer(id, p, T0.plus(secs(849))), Some(0x4000));
    run_timers(&mut t, T0.plus(secs(850)));
    assert_eq!(t.channel_for_peer(id, p, T0.plus(secs(850))), None);
}

#[test]
fn a_channel_cannot_be_rebound_to_another_peer_nor_a_peer_to_another_channel() {
    let mut t = table(1, 10, false);
    let id = t
        .insert(request(1, "a", valid_for(86400)), T0)
        .expect("alloc");
    let p = peer("8.8.8.8:5000");
    let q = peer("8.8.8.8:5001");
    t.refresh(id, Some(3600), T0).expect("keep the allocation");
    t.bind_channel(id, 0x4000, p, T0).expect("bind");
    assert_eq!(
        t.bind_channel(id, 0x4000, q, T0),
        Err(AllocError::ChannelConflict)
    );
    assert_eq!(
        t.bind_channel(id, 0x4001, p, T0),
        Err(AllocError::ChannelConflict)
    );
    t.bind_channel(id, 0x4001, q, T0)
        .expect("a fresh pair binds");
    // After expiry, the old pair stays reserved for five more minutes, then frees up.
    let later = T0.plus(secs(600 + 299));
    run_timers(&mut t, later);
    assert_eq!(
        t.bind_channel(id, 0x4000, peer("8.8.8.8:6000"), later),
        Err(AllocError::ChannelConflict)
    );
    let freed = T0.plus(secs(900));
    run_timers(&mut t, freed);
    t.bind_channel(id, 0x4000, peer("8.8.8.8:6000"), freed)
        .expect("quarantine over");
}

#[test]
fn the_user_quota_and_the_total_quota_refuse_more_allocations() {
    let mut t = table(2, 3, false);
    t.insert(request(1, "alice", valid_for(60)), T0)
        .expect("1st");
    t.insert(request(2, "alice", valid_for(60)), T0)
        .expect("2nd");
    assert_eq!(
        t.insert(request(3, "alice", valid_for(60)), T0).map(|_| ()),
        Err(AllocError::UserQuota)
    );
    t.insert(request(4, "bob", valid_for(60)), T0).expect("bob");
    assert_eq!(
        t.insert(request(5, "carol", valid_for(60)), T0).map(|_| ()),
        Err(AllocError::TotalQuota)
    );
    let alice = t.by_client(&tuple(1)).expect("alice 1");
    t.remove(alice);
    t.insert(request(6, "carol", valid_for(60)), T0)
        .expect("room again");
}

#[test]
fn the_user_quota_is_shared_between_worker_tables() {
    let quotas = Arc::new(Quotas::new(1, 10));
    let limits = table(1, 1, false).limits().clone();
    let mut a = AllocationTable::new(quotas.clone(), limits.clone());
    let mut b = AllocationTable::new(quotas.clone(), limits);
    a.insert(request(1, "alice", valid_for(60)), T0)
        .expect("first worker");
    assert_eq!(
        b.insert(request(2, "alice", valid_for(60)), T0).map(|_| ()),
        Err(AllocError::UserQuota)
    );
    assert_eq!(quotas.total(), 1);
}

/// A request from `client` (any port) instead of the usual 192.0.2.1.
fn request_from(client: &str, user: &str) -> NewAllocation {
    let mut r = request(1, user, valid_for(60));
    r.five_tuple.client = client.parse().expect("test address");
    r
}

#[test]
fn the_address_quota_counts_across_users_and_worker_tables_and_frees_on_removal() {
    let quotas = Arc::new(Quotas::new(10, 100));
    quotas.set_address_limit(2);
    let limits = table(1, 1, false).limits().clone();
    let mut a = AllocationTable::new(quotas.clone(), limits.clone());
    let mut b = AllocationTable::new(quotas.clone(), limits);
    let first = a
        .insert(request_from("198.51.100.7:1000", "alice"), T0)
        .expect("first");
    b.insert(request_from("198.51.100.7:1001", "bob"), T0)
        .expect("second, other worker, other user");
    assert_eq!(
        a.insert(request_from("198.51.100.7:1002", "carol"), T0)
            .map(|_| ()),
        Err(AllocError::AddressQuota)
    );
    b.insert(request_from("198.51.100.8:1000", "carol"), T0)
        .expect("another address is not affected");
    a.remove(first);
    a.insert(request_from("198.51.100.7:1003", "carol"), T0)
        .expect("a removal frees its place");
    assert_eq!(quotas.total(), 3);
}

#[test]
fn the_address_quota_counts_an_ipv6_64_as_one_address_and_mapped_ipv4_as_ipv4() {
    let quotas = Arc::new(Quotas::new(10, 100));
    quotas.set_address_limit(1);
    let limits = table(1, 1, false).limits().clone();
    let mut t = AllocationTable::new(quotas, limits);
    t.insert(request_from("[2001:db8:1:2::1]:1000", "a"), T0)
        .expect("first of the /64");
    assert_eq!(
        t.insert(request_from("[2001:db8:1:2:ffff::9]:1000", "b"), T0)
            .map(|_| ()),
        Err(AllocError::AddressQuota)
    );
    t.insert(request_from("[2001:db8:1:3::1]:1000", "c"), T0)
        .expect("another /64");
    t.insert(request_from("192.0.2.9:1000", "d"), T0)
        .expect("an IPv4 address");
    assert_eq!(
        t.insert(request_from("[::ffff:192.0.2.9]:1001", "e"), T0)
            .map(|_| ()),
        Err(AllocError::AddressQuota),
        "the same IPv4 address, as a dual-stack socket sees it"
    );
}

#[test]
fn an_expired_rest_username_cannot_create_an_allocation() {
    let mut t = table(5, 5, false);
    assert_eq!(
        t.insert(request(1, "a", T0.unix_secs() - 1), T0)
            .map(|_| ()),
        Err(AllocError::CredentialExpired)
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn an_allocation_made_while_valid_keeps_working_after_expiry_until_max_lifetime() {
    let mut t = table(5, 5, false);
    let id = t.insert(request(1, "a", valid_for(60)), T0).expect("alloc");
    let after = T0.plus(secs(120));
    t.refresh(id, Some(600), after)
        .expect("refresh after expiry");
    t.add_permission(id, peer("8.8.8.8:1").ip(), after)
        .expect("perm");
    t.bind_channel(id, 0x4000, peer("8.8.8.8:1"), after)
        .expect("chan");
    // Refreshes never carry it past max_allocation_lifetime (3600 s) from creation.
    let late = T0.plus(secs(3300));
    assert_eq!(t.refresh(id, Some(3600), late), Ok(secs(300)));
    assert_eq!(
        t.refresh(id, Some(600), T0.plus(secs(3600))),
        Err(AllocError::CredentialExpired)
    );
    assert_eq!(
        t.add_permission(id, peer("9.9.9.9:1").ip(), T0.plus(secs(3600))),
        Err(AllocError::CredentialExpired)
    );
}

#[test]
fn strict_expiry_refuses_refreshes_once_the_credential_expires() {
    let mut t = table(5, 5, true);
    let id = t.insert(request(1, "a", valid_for(60)), T0).expect("alloc");
    t.refresh(id, None, T0.plus(secs(60)))
        .expect("valid through its last second");
    let after = T0.plus(secs(61));
    assert_eq!(
        t.refresh(id, None, after),
        Err(AllocError::CredentialExpired)
    );
    assert_eq!(
        t.add_permission(id, peer("8.8.8.8:1").ip(), after),
        Err(AllocError::CredentialExpired)
    );
    assert_eq!(
        t.bind_channel(id, 0x4000, peer("8.8.8.8:1"), after),
        Err(AllocError::CredentialExpired)
    );
}

#[test]
fn permissions_and_channels_per_allocation_are_bounded() {
    let mut t = table(5, 5, false);
    let id = t
        .insert(request(1, "a", valid_for(600)), T0)
        .expect("alloc");
    for i in 0..MAX_PERMISSIONS {
        let ip = IpAddr::from([8, 8, (i / 256) as u8, i as u8]);
        t.add_permission(id, ip, T0).expect("room");
    }
    assert_eq!(
        t.add_permission(id, IpAddr::from([9, 9, 9, 9]), T0),
        Err(AllocError::TooManyPermissions)
    );
    // Expired ones make room again.
    t.add_permission(id, IpAddr::from([9, 9, 9, 9]), T0.plus(secs(300)))
        .expect("expired permissions are dropped");
    for i in 0..MAX_CHANNELS as u16 {
        t.bind_channel(
            id,
            0x4000 + i,
            peer(&format!("9.9.9.9:{}", 1000 + i)),
            T0.plus(secs(300)),
        )
        .expect("channel room");
    }
    assert_eq!(
        t.bind_channel(id, 0x4FFF, peer("9.9.9.9:9"), T0.plus(secs(300))),
        Err(AllocError::TooManyChannels)
    );
}

#[test]
fn the_deadline_set_holds_one_entry_per_allocation() {
    let mut t = table(100, 100, false);
    let mut ids = Vec::new();
    for port in 0..50 {
        ids.push(
            t.insert(request(port, &format!("u{port}"), valid_for(3600)), T0)
                .expect("a"),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        for k in 0..10u64 {
            let now = T0.plus(secs(k));
            t.add_permission(*id, IpAddr::from([8, 8, 8, i as u8]), now)
                .expect("p");
            t.refresh(*id, Some(700), now).expect("r");
        }
    }
    assert_eq!(t.deadlines.len(), 50);
    for id in &ids[..25] {
        t.remove(*id);
    }
    assert_eq!(t.deadlines.len(), 25);
}

#[test]
fn a_stale_id_never_reaches_a_newer_allocation_in_the_same_slot() {
    let mut t = table(5, 5, false);
    let old = t
        .insert(request(1, "a", valid_for(600)), T0)
        .expect("alloc");
    t.remove(old);
    let new = t
        .insert(request(2, "a", valid_for(600)), T0)
        .expect("alloc");
    assert_eq!(old.index, new.index);
    assert!(t.get(old).is_none());
    assert!(t.get(new).is_some());
}

#[test]
fn the_bitrate_cap_drops_what_exceeds_the_budget_and_refills_with_time() {
    let mut t = AllocationTable::new(
        Arc::new(Quotas::new(5, 5)),
        Limits {
            max_lifetime: secs(3600),
            strict_expiry: false,
            max_bytes_per_sec: 1000,
        },
    );
    let id = t
        .insert(request(1, "a", valid_for(600)), T0)
        .expect("alloc");
    assert!(t.spend(id, Direction::ToPeer, 600, T0));
    assert!(!t.spend(id, Direction::ToPeer, 600, T0));
    assert!(
        t.spend(id, Direction::ToClient, 600, T0),
        "directions are separate"
    );
    assert!(t.spend(
        id,
        Direction::ToPeer,
        600,
        T0.plus(Duration::from_millis(500))
    ));
}

#[test]
fn removing_a_user_deletes_exactly_its_allocations_and_frees_their_quota() {
    let mut t = table(2, 100, false);
    let now = T0;
    let a1 = t
        .insert(request(1, "room:alice", valid_for(600)), now)
        .unwrap();
    let a2 = t
        .insert(request(2, "room:alice", valid_for(600)), now)
        .unwrap();
    let b = t
        .insert(request(3, "room:bob", valid_for(600)), now)
        .unwrap();
    let removed: Vec<AllocId> = t
        .remove_user("room:alice")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(removed, vec![a1, a2]);
    assert!(t.get(a1).is_none() && t.get(a2).is_none());
    assert!(t.get(b).is_some(), "another user's allocation stays");
    assert!(t.by_client(&tuple(1)).is_none());
    assert!(
        t.remove_user("room:alice").is_empty(),
        "nothing left to remove"
    );
    assert!(t.remove_user("room").is_empty(), "a prefix is not the user");
    assert_eq!(t.len(), 1);
    t.insert(request(4, "room:alice", valid_for(600)), now)
        .expect("alice's quota was given back");
}
