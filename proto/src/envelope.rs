//! Signed envelopes: a payload signed by the sender's libp2p ed25519 key under a domain.

use libp2p_identity::{KeyType, Keypair, PeerId, PublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::decode::{decode_bounded, encode, DecodeError};

/// Largest accepted protobuf-encoded public key (an ed25519 key takes 36 bytes).
pub const MAX_PUBLIC_KEY_LEN: usize = 64;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// What a signature is for; a signature in one domain never verifies in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Domain {
    /// An adapter delta from a worker.
    Delta,
    /// A coordinator announcement.
    Announce,
    /// A join request.
    Join,
    /// A checkpoint manifest.
    Checkpoint,
}

impl Domain {
    /// blake3 `derive_key` context string of this domain.
    pub fn context(self) -> &'static str {
        match self {
            Domain::Delta => "hearth v1 delta",
            Domain::Announce => "hearth v1 announce",
            Domain::Join => "hearth v1 join",
            Domain::Checkpoint => "hearth v1 checkpoint",
        }
    }
}

/// Why an envelope could not be made or verified.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The signing key is not ed25519.
    #[error("only ed25519 keys are accepted, got {0:?}")]
    NotEd25519(KeyType),
    /// The public key bytes do not decode.
    #[error("public key of {len} bytes does not decode: {reason}")]
    BadPublicKey {
        /// Length of the key bytes.
        len: usize,
        /// Decoder message.
        reason: String,
    },
    /// The public key bytes are not the canonical encoding of the key they decode to.
    #[error("public key encoding of {0} bytes is not canonical")]
    NonCanonicalKey(usize),
    /// Signature of the wrong length.
    #[error("signature has {0} bytes, expected {SIGNATURE_LEN}")]
    BadSignatureLength(usize),
    /// The signature does not match key, domain and payload.
    #[error("signature by {peer} does not verify for domain {domain:?}")]
    BadSignature {
        /// Peer the key belongs to.
        peer: PeerId,
        /// Domain checked.
        domain: Domain,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The envelope or its payload does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A payload with the sender's public key and a signature over both, under a [`Domain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEnvelope {
    /// libp2p protobuf encoding of the sender's ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Signed bytes (usually a bincode-encoded message).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// ed25519 signature over [`signing_digest`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The 32 bytes that are signed: blake3 `derive_key(domain context)` over the length-prefixed key and the payload.
pub fn signing_digest(domain: Domain, public_key: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(domain.context());
    h.update(&(public_key.len() as u64).to_le_bytes());
    h.update(public_key);
    h.update(&(payload.len() as u64).to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

impl SignedEnvelope {
    /// Signs `payload` under `domain` with an ed25519 keypair.
    pub fn sign(
        keypair: &Keypair,
        domain: Domain,
        payload: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        if keypair.key_type() != KeyType::Ed25519 {
            return Err(EnvelopeError::NotEd25519(keypair.key_type()));
        }
        let public_key = keypair.public().encode_protobuf();
        let digest = signing_digest(domain, &public_key, &payload);
        let signature = keypair
            .sign(&digest)
            .map_err(|e| EnvelopeError::Signing(e.to_string()))?;
        Ok(Self {
            public_key,
            payload,
            signature,
        })
    }

    /// Encodes `message` with bincode and signs it.
    pub fn seal<T: Serialize>(
        keypair: &Keypair,
        domain: Domain,
        message: &T,
    ) -> Result<Self, EnvelopeError> {
        Self::sign(keypair, domain, encode(message))
    }

    /// Checks key type, canonical key encoding and signature; returns the signer's peer id.
    pub fn verify(&self, domain: Domain) -> Result<PeerId, EnvelopeError> {
        let len = self.public_key.len();
        if len > MAX_PUBLIC_KEY_LEN {
            return Err(EnvelopeError::BadPublicKey {
                len,
                reason: format!("longer than {MAX_PUBLIC_KEY_LEN} bytes"),
            });
        }
        let key = PublicKey::try_decode_protobuf(&self.public_key).map_err(|e| {
            EnvelopeError::BadPublicKey {
                len,
                reason: e.to_string(),
            }
        })?;
        if key.key_type() != KeyType::Ed25519 {
            return Err(EnvelopeError::NotEd25519(key.key_type()));
        }
        if key.encode_protobuf() != self.public_key {
            return Err(EnvelopeError::NonCanonicalKey(len));
        }
        if self.signature.len() != SIGNATURE_LEN {
            return Err(EnvelopeError::BadSignatureLength(self.signature.len()));
        }
        let peer = key.to_peer_id();
        let digest = signing_digest(domain, &self.public_key, &self.payload);
        if !key.verify(&digest, &self.signature) {
            return Err(EnvelopeError::BadSignature { peer, domain });
        }
        Ok(peer)
    }

    /// Verifies, then decodes the payload as `T` with at most `limit` bytes.
    pub fn open<T: DeserializeOwned>(
        &self,
        domain: Domain,
        limit: usize,
    ) -> Result<(PeerId, T), EnvelopeError> {
        let peer = self.verify(domain)?;
        Ok((peer, decode_bounded(&self.payload, limit)?))
    }

    /// bincode encoding of the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes an envelope of at most `limit` bytes (not yet verified).
    pub fn from_bytes(bytes: &[u8], limit: usize) -> Result<Self, EnvelopeError> {
        Ok(decode_bounded(bytes, limit)?)
    }

    /// blake3 of the payload, used to reject duplicate submissions.
    pub fn payload_id(&self) -> crate::cid::ContentId {
        crate::cid::ContentId::of(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    #[test]
    fn sign_verify_and_open() {
        let kp = key(1);
        let env = SignedEnvelope::seal(&kp, Domain::Join, &(3u32, String::from("w"))).unwrap();
        assert_eq!(env.public_key.len(), 36);
        assert_eq!(env.signature.len(), 64);
        assert_eq!(env.verify(Domain::Join).unwrap(), kp.public().to_peer_id());
        let (peer, msg): (PeerId, (u32, String)) = env.open(Domain::Join, 1024).unwrap();
        assert_eq!(peer, kp.public().to_peer_id());
        assert_eq!(msg, (3, "w".to_string()));
        let back = SignedEnvelope::from_bytes(&env.to_bytes(), 1024).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn byte_strings_keep_the_derived_wire_format_and_stay_bounded() {
        #[derive(Serialize)]
        struct Derived {
            public_key: Vec<u8>,
            payload: Vec<u8>,
            signature: Vec<u8>,
        }
        let env = SignedEnvelope::sign(&key(4), Domain::Delta, vec![7; 300]).unwrap();
        let derived = Derived {
            public_key: env.public_key.clone(),
            payload: env.payload.clone(),
            signature: env.signature.clone(),
        };
        assert_eq!(env.to_bytes(), crate::decode::encode(&derived));
        // A payload length prefix claiming 60 MiB in a short input is refused, not read.
        let mut bytes = crate::decode::encode(&env.public_key);
        bytes.push(0xFC);
        bytes.extend_from_slice(&(60u32 << 20).to_le_bytes());
        bytes.extend_from_slice(&[1; 100]);
        assert!(SignedEnvelope::from_bytes(&bytes, 1 << 20).is_err());
    }

    #[test]
    fn wrong_domain_fails() {
        let env = SignedEnvelope::sign(&key(2), Domain::Delta, b"payload".to_vec()).unwrap();
        for d in [Domain::Announce, Domain::Join, Domain::Checkpoint] {
            assert!(
                matches!(env.verify(d), Err(EnvelopeError::BadSignature { domain, .. }) if domain == d)
            );
        }
        env.verify(Domain::Delta).unwrap();
    }

    #[test]
    fn swapped_key_or_payload_fails() {
        let a = SignedEnvelope::sign(&key(3), Domain::Delta, b"x".to_vec()).unwrap();
        let b = SignedEnvelope::sign(&key(4), Domain::Delta, b"x".to_vec()).unwrap();
        let mut forged = a.clone();
        forged.public_key = b.public_key.clone();
        assert!(matches!(
            forged.verify(Domain::Delta),
            Err(EnvelopeError::BadSignature { .. })
        ));
        let mut forged = a.clone();
        forged.payload = b"y".to_vec();
        assert!(forged.verify(Domain::Delta).is_err());
        let mut short = a;
        short.signature.pop();
        assert!(matches!(
            short.verify(Domain::Delta),
            Err(EnvelopeError::BadSignatureLength(63))
        ));
    }

    #[test]
    fn non_ed25519_or_non_canonical_keys_are_rejected() {
        let good = SignedEnvelope::sign(&key(5), Domain::Delta, vec![1]).unwrap();
        // Protobuf PublicKey { Type = Secp256k1 (2), Data = 33 bytes }.
        let mut secp = vec![0x08, 0x02, 0x12, 33, 0x02];
        secp.extend([7u8; 32]);
        let mut forged = good.clone();
        forged.public_key = secp;
        assert!(forged.verify(Domain::Delta).is_err());
        // The same ed25519 key with an unknown protobuf field appended is not canonical.
        let mut padded = good.clone();
        padded.public_key.extend([0x18, 0x01]);
        assert!(padded.verify(Domain::Delta).is_err());
        let mut long = good.clone();
        long.public_key = vec![0; MAX_PUBLIC_KEY_LEN + 1];
        assert!(matches!(
            long.verify(Domain::Delta),
            Err(EnvelopeError::BadPublicKey { len: 65, .. })
        ));
        assert!(good.verify(Domain::Delta).is_ok());
    }

    #[test]
    fn every_single_bit_flip_of_an_encoded_envelope_is_caught() {
        let env =
            SignedEnvelope::sign(&key(6), Domain::Delta, b"hearth delta payload".to_vec()).unwrap();
        let bytes = env.to_bytes();
        let mut caught = 0usize;
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let ok = SignedEnvelope::from_bytes(&b, 4096)
                .ok()
                .and_then(|e| e.verify(Domain::Delta).ok());
            assert!(
                ok.is_none(),
                "bit {bit} flipped and the envelope still verified"
            );
            caught += 1;
        }
        assert_eq!(caught, bytes.len() * 8);
        assert!(caught > 900, "only {caught} bits tested");
    }
}
