//! The training recipe: epochs, batches, Adam's learning rate and its decay, and the ε
//! ramp (auto_LiRPA's `LinearScheduler`).

/// auto_LiRPA's `LinearScheduler(eps, "start=S,length=L")`: ε = 0 in epochs before `S`
/// (1-based), then a linear ramp per batch over `L` epochs, then the full ε.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpsSchedule {
    pub start: usize,
    pub length: usize,
}

impl Default for EpsSchedule {
    /// The full ε from the first epoch.
    fn default() -> Self {
        EpsSchedule { start: 1, length: 0 }
    }
}

impl std::str::FromStr for EpsSchedule {
    type Err = String;
    /// `start=S,length=L` (either may be omitted: start 1, length 0).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = EpsSchedule::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("'{part}' is not key=value"))?;
            let v: usize = value.trim().parse().map_err(|_| format!("'{value}' is not a whole number"))?;
            match key.trim() {
                "start" => out.start = v.max(1),
                "length" => out.length = v,
                other => return Err(format!("unknown schedule key '{other}' (start, length)")),
            }
        }
        Ok(out)
    }
}

impl EpsSchedule {
    /// ε of batch `batch` (1-based) of `batches` in epoch `epoch` (1-based).
    pub fn eps(&self, eps_max: f64, epoch: usize, batch: usize, batches: usize) -> f64 {
        if epoch < self.start {
            return 0.0;
        }
        if self.length == 0 {
            return eps_max;
        }
        let k = (epoch - self.start) as f64;
        let len = self.length as f64;
        let from = eps_max * (k / len).min(1.0);
        let to = eps_max * ((k + 1.0) / len).min(1.0);
        from + (to - from) * (batch - 1) as f64 / batches as f64
    }

    /// The first epoch whose every batch has the full ε.
    pub fn full_epoch(&self) -> usize {
        self.start + self.length
    }
}

/// The hyper-parameters of a run.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The final radius ε of the L∞ input set.
    pub eps: f64,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub schedule: EpsSchedule,
    /// Multiply the learning rate by `lr_decay` every `lr_step` epochs once ε is full
    /// (PyTorch's `StepLR` stepped from that epoch on); `None`: constant.
    pub lr_step: Option<usize>,
    pub lr_decay: f64,
}

impl Default for Recipe {
    /// One epoch at ε = 0, batch 64, learning rate 1e-3, no ramp, no decay.
    fn default() -> Self {
        Recipe {
            eps: 0.0,
            epochs: 1,
            batch: 64,
            lr: 1e-3,
            schedule: EpsSchedule::default(),
            lr_step: None,
            lr_decay: 1.0,
        }
    }
}

impl Recipe {
    /// The learning rate of epoch `epoch` (1-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let full = self.schedule.full_epoch();
        match self.lr_step {
            Some(k) if k > 0 && epoch >= full => {
                self.lr * self.lr_decay.powi(((epoch - full + 1) / k) as i32)
            }
            _ => self.lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anchor's recorded ε of the first and last batch of epochs 2 and 3 (23 batches)
    /// and its learning-rate halvings at epochs 34, 44 and 54.
    #[test]
    fn matches_auto_lirpa_recipe() {
        let s: EpsSchedule = "start=2,length=23".parse().unwrap();
        assert_eq!(s.eps(0.1, 1, 23, 23), 0.0);
        assert_eq!(s.eps(0.1, 2, 1, 23), 0.0);
        assert!((s.eps(0.1, 2, 23, 23) - 0.004158790170132326).abs() < 1e-15);
        assert!((s.eps(0.1, 3, 1, 23) - 0.004347826086956522).abs() < 1e-15);
        assert_eq!(s.eps(0.1, 25, 1, 23), 0.1);
        let r = Recipe {
            eps: 0.1,
            epochs: 60,
            batch: 64,
            lr: 1e-3,
            schedule: s,
            lr_step: Some(10),
            lr_decay: 0.5,
        };
        let lrs: Vec<f64> = [24, 25, 33, 34, 43, 44, 54].iter().map(|&e| r.lr_at(e)).collect();
        assert_eq!(lrs, vec![1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4]);
        assert!("start=x".parse::<EpsSchedule>().is_err());
        assert!("begin=2".parse::<EpsSchedule>().is_err());
    }
}
