//! `--device cpu|cuda:N|auto`: which device trains, and whether this build can use it.

use std::fmt;
use std::str::FromStr;

use hearth_model::Device;

/// A device choice, resolved (no `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU (threads from `--threads`).
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

/// What the volunteer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// Pick a GPU when this build has CUDA and one is present, else the CPU.
    Auto,
    /// Exactly this one.
    Fixed(DeviceChoice),
}

/// A `--device` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the accepted spellings.
    #[error("device {0:?} is not cpu, cuda:N or auto")]
    Syntax(String),
    /// CUDA asked for, but this binary was built without it.
    #[error("device {0} needs a hearth-worker built with CUDA: cargo build --release -p hearth-worker --features cuda (needs the CUDA toolkit), or use --device cpu")]
    NoCudaBuild(DeviceChoice),
    /// CUDA is built in, but the device does not open.
    #[error("device {device} is not usable: {reason}")]
    Unavailable {
        /// The device.
        device: DeviceChoice,
        /// candle's error.
        reason: String,
    },
}

impl FromStr for DeviceArg {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Fixed(DeviceChoice::Cpu)),
            "cuda" | "gpu" => Ok(Self::Fixed(DeviceChoice::Cuda(0))),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| Self::Fixed(DeviceChoice::Cuda(n)))
                .ok_or_else(|| DeviceError::Syntax(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with the `cuda` feature.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

impl DeviceArg {
    /// Resolve `auto` and check that the device can be used by this build.
    pub fn resolve(self) -> Result<DeviceChoice, DeviceError> {
        match self {
            DeviceArg::Auto => Ok(if CUDA_BUILD && DeviceChoice::Cuda(0).open().is_ok() {
                DeviceChoice::Cuda(0)
            } else {
                DeviceChoice::Cpu
            }),
            DeviceArg::Fixed(d) => {
                d.open()?;
                Ok(d)
            }
        }
    }
}

impl DeviceChoice {
    /// Open the candle device.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(_) if !CUDA_BUILD => Err(DeviceError::NoCudaBuild(self)),
            DeviceChoice::Cuda(n) => Device::new_cuda(n).map_err(|e| DeviceError::Unavailable {
                device: self,
                reason: e.to_string(),
            }),
        }
    }

    /// Whether this is the CPU.
    pub fn is_cpu(self) -> bool {
        self == DeviceChoice::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!("auto".parse(), Ok(DeviceArg::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceArg::Fixed(DeviceChoice::Cpu)));
        assert_eq!(
            "cuda:1".parse(),
            Ok(DeviceArg::Fixed(DeviceChoice::Cuda(1)))
        );
        assert_eq!("cuda".parse(), Ok(DeviceArg::Fixed(DeviceChoice::Cuda(0))));
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1", "metal"] {
            assert!(bad.parse::<DeviceArg>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_always_resolves_and_auto_falls_back() {
        assert_eq!(
            DeviceArg::Fixed(DeviceChoice::Cpu).resolve(),
            Ok(DeviceChoice::Cpu)
        );
        let auto = DeviceArg::Auto.resolve().unwrap();
        if !CUDA_BUILD {
            assert_eq!(auto, DeviceChoice::Cpu);
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let e = DeviceArg::Fixed(DeviceChoice::Cuda(0))
            .resolve()
            .unwrap_err();
        assert_eq!(e, DeviceError::NoCudaBuild(DeviceChoice::Cuda(0)));
        assert!(e.to_string().contains("--features cuda"), "{e}");
    }
}
