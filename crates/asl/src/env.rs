//! What the interpreter takes from the outside world: time, randomness and task tokens.
//! Nothing in this crate reads a clock or an OS random source.

/// A source of random bits.
pub trait Entropy {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Everything a step needs from its host.
pub trait Env: Entropy {
    /// Wall-clock time in epoch milliseconds.
    fn now_ms(&mut self) -> i64;

    /// The task token handed to `.waitForTaskToken` tasks and activities. The default is a
    /// random UUID; hosts that route tokens (the shard) override it.
    fn task_token(&mut self, execution_arn: &str, task_id: u64) -> String {
        let _ = (execution_arn, task_id);
        uuid_v4(self)
    }
}

/// SplitMix64: a tiny, fast, seedable generator. Deterministic given its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl Entropy for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A deterministic environment: a manual clock and a seeded generator. Used by tests, the
/// benchmarks and by hosts that want reproducible runs.
#[derive(Debug, Clone)]
pub struct ManualEnv {
    pub now_ms: i64,
    pub rng: SplitMix64,
}

impl ManualEnv {
    pub fn new(now_ms: i64, seed: u64) -> Self {
        ManualEnv {
            now_ms,
            rng: SplitMix64::new(seed),
        }
    }
}

impl Entropy for ManualEnv {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

impl Env for ManualEnv {
    fn now_ms(&mut self) -> i64 {
        self.now_ms
    }
}

/// A version-4 UUID from the given entropy, in its canonical lowercase form.
pub fn uuid_v4(e: &mut (impl Entropy + ?Sized)) -> String {
    let hi = e.next_u64();
    let lo = e.next_u64();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// FNV-1a of a string: a stable seed from a name.
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        let f = a.next_f64();
        assert!((0.0..1.0).contains(&f));
        let u = uuid_v4(&mut a);
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert!(matches!(u.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }
}
