//! Free TCP ports for servers a test starts in another process.
//!
//! Binding port 0 hands out a port from the kernel's ephemeral range, which outgoing
//! connections also take their source ports from, and can hand the same port to two tests
//! running at once once the first probe closes it. Ports are picked at random below that
//! range instead, never twice in one test binary, and checked by binding them (the same
//! rule as `tests/free_port.mjs`).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

const LOWEST: u16 = 10_000;
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > LOWEST + 1_000)
        .unwrap_or(49_152)
}

fn random_u16() -> u16 {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).expect("the OS random source");
    u16::from_le_bytes(bytes)
}

/// A port on 127.0.0.1 free now, outside the ephemeral range, not handed out before in this
/// process.
pub fn free_port() -> u16 {
    let high = ephemeral_low();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let port = LOWEST + random_u16() % (high - LOWEST);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOWEST}..{high} after 200 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!((LOWEST..ephemeral_low()).contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
