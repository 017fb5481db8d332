//! Task tokens: bearer credentials handed to workers (`.waitForTaskToken`, activities).
//!
//! A token names the shard, execution and task it belongs to, so that any node can route
//! it, then a 128-bit random nonce (an earlier attempt's token is refused), then an
//! HMAC-SHA256 (first 128 bits) of all that under the cluster's [`TokenKey`], kept in the
//! meta group. A token that was not made by the cluster, or was altered, fails the MAC and
//! is refused as invalid before anything is looked up: guessing tells nothing about which
//! executions or tasks exist.
//!
//! Format: `{shard:x}.{exec:x}.{task:x}.{nonce:032x}.{mac:032x}`. Tokens handed out before
//! the MAC existed (four parts) are still accepted, by exact match with the pending task's
//! stored token only.

use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;

/// Bytes of a token key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a token's MAC (a left truncation of HMAC-SHA256).
const MAC_BYTES: usize = 16;

/// The cluster's secret for task tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; KEY_BYTES]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Where a token points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenId {
    pub shard: u32,
    pub exec: u64,
    pub task: u64,
    /// Whether it carried a MAC that checked out (false: a token from before MACs).
    pub signed: bool,
}

impl TokenKey {
    pub fn new(bytes: [u8; KEY_BYTES]) -> TokenKey {
        TokenKey(bytes)
    }

    /// A fresh key from a CSPRNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> TokenKey {
        let mut b = [0u8; KEY_BYTES];
        rng.fill_bytes(&mut b);
        TokenKey(b)
    }

    /// The key as stored in meta (lowercase hex).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<TokenKey> {
        hex_bytes::<KEY_BYTES>(s).map(TokenKey)
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        m.update(body.as_bytes());
        m
    }

    /// The token of task `task` of execution `exec` on `shard`.
    pub fn issue(&self, shard: u32, exec: u64, task: u64, nonce: u128) -> String {
        let body = format!("{shard:x}.{exec:x}.{task:x}.{nonce:032x}");
        let tag = self.mac(&body).finalize().into_bytes();
        format!("{body}.{}", hex(&tag[..MAC_BYTES]))
    }

    /// Where a token points, if it is well formed and its MAC (when it has one) checks out
    /// (compared in constant time).
    pub fn check(&self, token: &str) -> Option<TokenId> {
        let (mut id, mac) = parse(token)?;
        if let Some(mac) = mac {
            let body = &token[..token.len() - mac.len() - 1];
            let bytes = hex_bytes::<MAC_BYTES>(mac)?;
            self.mac(body).verify_truncated_left(&bytes).ok()?;
            id.signed = true;
        }
        Some(id)
    }
}

/// Where a token points, without checking its MAC: for routing it to its shard.
pub fn route(token: &str) -> Option<(u32, u64, u64)> {
    parse(token).map(|(id, _)| (id.shard, id.exec, id.task))
}

/// The parts of a token: where it points, and its MAC in hex if it has one.
fn parse(token: &str) -> Option<(TokenId, Option<&str>)> {
    let mut it = token.split('.');
    let shard = u32::from_str_radix(it.next()?, 16).ok()?;
    let exec = u64::from_str_radix(it.next()?, 16).ok()?;
    let task = u64::from_str_radix(it.next()?, 16).ok()?;
    let nonce = it.next()?;
    // 32 hex digits; 16 in tokens handed out before nonces had 128 bits (still pending
    // in a data directory from then).
    let hex = nonce.bytes().all(|b| b.is_ascii_hexdigit());
    if !matches!(nonce.len(), 16 | 32) || !hex {
        return None;
    }
    let mac = it.next();
    if it.next().is_some() || mac.is_some_and(|m| m.len() != MAC_BYTES * 2) {
        return None;
    }
    let id = TokenId {
        shard,
        exec,
        task,
        signed: false,
    };
    Some((id, mac))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut b = [0u8; N];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key(seed: u64) -> TokenKey {
        TokenKey::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    #[test]
    fn a_token_routes_and_checks_out_under_its_key_only() {
        let k = key(1);
        let t = k.issue(63, 1234, 7, 0xdead_beef);
        assert_eq!(route(&t), Some((63, 1234, 7)));
        let id = k.check(&t).unwrap();
        assert_eq!((id.shard, id.exec, id.task, id.signed), (63, 1234, 7, true));
        // Another cluster's key, or any change to any part, fails the MAC.
        assert_eq!(key(2).check(&t), None);
        let other_exec = t.replacen(".4d2.", ".4d3.", 1);
        assert_ne!(other_exec, t);
        assert_eq!(k.check(&other_exec), None);
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.check(std::str::from_utf8(&flipped).unwrap()), None);
        // A MAC made for one execution's token does not fit another's.
        let t2 = k.issue(63, 1235, 7, 0xdead_beef);
        let spliced = format!(
            "{}.{}",
            t2.rsplit_once('.').unwrap().0,
            t.rsplit_once('.').unwrap().1
        );
        assert_eq!(k.check(&spliced), None);
    }

    #[test]
    fn malformed_tokens_are_refused_and_old_ones_still_route() {
        let k = key(1);
        // A token from before MACs (and one from before 128-bit nonces) routes, unsigned.
        let old = "3f.4d2.7.000000000000000000000000deadbeef";
        assert_eq!(k.check(old).map(|i| i.signed), Some(false));
        assert_eq!(route("3f.4d2.7.00000000deadbeef"), Some((63, 1234, 7)));
        for bad in [
            "",
            "nope",
            "1.2.3.4",
            "3f.4d2.7.000000000000000000000000deadbeeg",
            "3f.4d2.7.000000000000000000000000deadbeef.00",
            "3f.4d2.7.000000000000000000000000deadbeef.0000000000000000000000000000000g",
            "3f.4d2.7.000000000000000000000000deadbeef.00000000000000000000000000000000.x",
            "3f.4d2.7.000000000000000000000000deadbéef",
        ] {
            assert_eq!(route(bad).filter(|_| k.check(bad).is_some()), None, "{bad}");
        }
    }

    #[test]
    fn keys_read_back_and_never_print() {
        let k = key(3);
        assert_eq!(TokenKey::from_hex(&k.to_hex()), Some(k.clone()));
        assert_eq!(TokenKey::from_hex("abc"), None);
        assert_eq!(format!("{k:?}"), "TokenKey(..)");
    }
}
