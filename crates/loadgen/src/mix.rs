//! The operations a simulated person performs, the weighted mix they are drawn from, and the
//! small deterministic generator that draws them (and picks users and records).

use std::fmt;

/// The default mix: `login=1,message=5,record_write=2,record_read=4,audit_query=1`.
pub const DEFAULT_MIX: &str = "login=1,message=5,record_write=2,record_read=4,audit_query=1";

/// One kind of operation, as a person does it through the SDK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Password step and TOTP step: a full AAL2 login.
    Login,
    /// A 1 KB end-to-end encrypted 1:1 message, patient to doctor or doctor to patient.
    Message,
    /// A doctor writes a FHIR Observation for a patient (CP-ABE seal, signature, CreateRecord).
    RecordWrite,
    /// The patient or a doctor reads a record (GetRecord, signature and hash checks, decrypt).
    RecordRead,
    /// The auditor queries the newest 50 events about a patient.
    AuditQuery,
}

/// Every operation, in table order.
pub const OPS: [Op; 5] = [Op::Login, Op::Message, Op::RecordWrite, Op::RecordRead, Op::AuditQuery];

impl Op {
    /// The name used in mixes, tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Message => "message",
            Op::RecordWrite => "record_write",
            Op::RecordRead => "record_read",
            Op::AuditQuery => "audit_query",
        }
    }
}

/// Relative weights per operation; operations not named have weight 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix(Vec<(Op, u32)>);

impl Mix {
    /// Parses `login=1,message=5,...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut mix: Vec<(Op, u32)> = OPS.iter().map(|op| (*op, 0)).collect();
        for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("mix: {part:?} is not name=weight"))?;
            let known = OPS.map(Op::name).join(", ");
            let slot = mix
                .iter_mut()
                .find(|(op, _)| op.name() == name.trim())
                .ok_or_else(|| format!("mix: unknown operation {name:?} (known: {known})"))?;
            slot.1 = weight
                .trim()
                .parse()
                .map_err(|_| format!("mix: weight {weight:?} is not a whole number"))?;
        }
        if mix.iter().all(|(_, weight)| *weight == 0) {
            return Err("mix: no operation has a weight".to_owned());
        }
        Ok(Self(mix))
    }

    /// The weights, in table order.
    pub fn weights(&self) -> &[(Op, u32)] {
        &self.0
    }

    /// This mix without `op`; `None` when nothing else is left.
    pub fn without(&self, op: Op) -> Option<Self> {
        let rest: Vec<(Op, u32)> = self
            .0
            .iter()
            .map(|(o, weight)| (*o, if *o == op { 0 } else { *weight }))
            .collect();
        rest.iter().any(|(_, weight)| *weight > 0).then_some(Self(rest))
    }

    /// Whether `op` can be drawn.
    pub fn includes(&self, op: Op) -> bool {
        self.0.iter().any(|(o, weight)| *o == op && *weight > 0)
    }

    fn total(&self) -> u32 {
        self.0.iter().map(|(_, weight)| weight).sum()
    }
}

impl Default for Mix {
    fn default() -> Self {
        Self(vec![
            (Op::Login, 1),
            (Op::Message, 5),
            (Op::RecordWrite, 2),
            (Op::RecordRead, 4),
            (Op::AuditQuery, 1),
        ])
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self
            .0
            .iter()
            .map(|(op, weight)| format!("{}={weight}", op.name()))
            .collect();
        f.write_str(&text.join(","))
    }
}

/// xorshift64*: enough to pick operations and users without another dependency.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// An operation drawn by the mix's weights.
    pub fn pick(&mut self, mix: &Mix) -> Op {
        let total = mix.total().max(1);
        let mut ticket = u32::try_from(self.next_u64() % u64::from(total)).unwrap_or(0);
        for (op, weight) in mix.weights() {
            if ticket < *weight {
                return *op;
            }
            ticket -= weight;
        }
        Op::Message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_parses_and_prints_back() {
        let mix = Mix::parse(DEFAULT_MIX).unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!(mix.to_string(), DEFAULT_MIX);
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        assert!(Mix::parse("login").unwrap_err().contains("name=weight"));
        assert!(Mix::parse("fly=1").unwrap_err().contains("unknown operation"));
        assert!(Mix::parse("login=x").unwrap_err().contains("whole number"));
        assert!(Mix::parse("login=0").unwrap_err().contains("no operation"));
    }

    #[test]
    fn a_mix_without_an_operation_never_draws_it() {
        let rest = Mix::default().without(Op::Login).unwrap();
        assert!(!rest.includes(Op::Login));
        assert!(rest.includes(Op::Message));
        let mut rng = Rng::new(3);
        assert!((0..2000).all(|_| rng.pick(&rest) != Op::Login));
        assert_eq!(Mix::parse("login=2").unwrap().without(Op::Login), None);
    }

    #[test]
    fn picks_follow_the_weights() {
        let mix = Mix::parse("message=3,audit_query=1").unwrap();
        let mut rng = Rng::new(7);
        let picks: Vec<Op> = (0..4000).map(|_| rng.pick(&mix)).collect();
        let messages = picks.iter().filter(|op| **op == Op::Message).count();
        assert!(picks.iter().all(|op| matches!(op, Op::Message | Op::AuditQuery)));
        assert!((2800..3200).contains(&messages), "{messages}");
    }
}
