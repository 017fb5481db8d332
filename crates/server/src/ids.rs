//! Random names and ids. Every one comes from `rand`'s thread generator (ChaCha12, seeded
//! and reseeded from the operating system): never from a clock-seeded generator, which
//! gave two nodes the same "random" execution name when they started one in the same
//! millisecond.

use rand::{Rng, RngCore};

/// A random (version 4) UUID in its usual hyphenated form.
pub fn uuid() -> String {
    uuid_from(&mut rand::thread_rng())
}

/// A random (version 4) UUID drawn from `rng`.
pub fn uuid_from(rng: &mut impl RngCore) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The interpreter's randomness (`States.UUID`, `$random`, retry jitter) for executions
/// that run outside a shard: Express executions and `trellis run`.
pub struct Entropy(rand::rngs::StdRng);

impl Default for Entropy {
    fn default() -> Self {
        Entropy(rand::SeedableRng::from_entropy())
    }
}

impl trellis_asl::Entropy for Entropy {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = uuid();
        let b = uuid();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.len(), 36);
    }
}
