//! Shapes fitted to calibration runs: how a step's output grows with its
//! input (`Power`, `Curve`), and how much invocations side by side slow
//! each other (`Stretch`).

/// The inputs' coefficient of variation (about the spread of their
/// logarithms) below which no line, exponent or curve can be fitted.
pub(super) const MIN_SPREAD: f64 = 0.05;

/// Nodes a [`Curve`] keeps across its inputs' range.
const NODES: usize = 24;

/// How much longer something took with `k` invocations running at once
/// on the calibration machine than at the runs' lowest concurrency: by
/// concurrency, ascending, from the lowest (1×); empty when the runs were
/// all at one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stretch(Vec<(f64, f64)>);

impl Stretch {
    /// From the lowest concurrency and the ratios measured at higher ones.
    pub(crate) fn new(lowest: usize, mut higher: Vec<(usize, f64)>) -> Stretch {
        higher.sort_by_key(|h| h.0);
        if higher.is_empty() {
            return Stretch::default();
        }
        let points = std::iter::once((lowest as f64, 1.0)).chain(higher.into_iter().map(|(k, r)| (k as f64, r)));
        Stretch(points.collect())
    }

    /// How many concurrencies it was measured at (none: 0).
    #[cfg(test)]
    pub(crate) fn levels(&self) -> usize {
        self.0.len()
    }

    /// The highest calibrated concurrency and its factor.
    pub(crate) fn highest(&self) -> Option<(f64, f64)> {
        self.0.last().copied()
    }

    /// The factor at `k` running at once: between calibrated concurrencies,
    /// a line; below the lowest, 1; past the highest, the highest's.
    pub(crate) fn at(&self, k: f64) -> f64 {
        let s = &self.0;
        match s.iter().position(|&(at, _)| at >= k) {
            None => s.last().map_or(1.0, |p| p.1),
            Some(0) => 1.0,
            Some(i) => {
                let ((k0, s0), (k1, s1)) = (s[i - 1], s[i]);
                s0 + (s1 - s0) * (k - k0) / (k1 - k0)
            }
        }
    }
}

/// `y = k × x^e`: what a step puts out for what it takes in. A word
/// count's table grows slower than its text (e < 1); a filter's output is
/// a share of its input (e = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Power {
    k: f64,
    e: f64,
}

impl Power {
    /// Output as much as input.
    pub(crate) const IDENTITY: Power = Power { k: 1.0, e: 1.0 };

    /// The output for an input of `x`.
    pub(crate) fn at(&self, x: f64) -> f64 {
        match x {
            x if x <= 0.0 => 0.0,
            // Proportional (any step whose inputs were of one size): no pow
            // for each of a simulation's invocations.
            x if self.e == 1.0 => self.k * x,
            x => self.k * x.powf(self.e),
        }
    }

    /// Fits (input, output) pairs: the exponent by least squares over
    /// their logarithms when the inputs vary (1 when they are all of
    /// about one size), then the factor so that the outputs' total is the
    /// observed one.
    pub(crate) fn fit(pairs: &[(f64, f64)]) -> Power {
        let logs: Vec<(f64, f64)> =
            pairs.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).map(|p| (p.0.ln(), p.1.ln())).collect();
        let n = logs.len() as f64;
        let mut e = 1.0;
        if logs.len() >= 2 {
            let (mx, my) = (logs.iter().map(|p| p.0).sum::<f64>() / n, logs.iter().map(|p| p.1).sum::<f64>() / n);
            let var: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
            let cov: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
            // ln x's spread is about x's coefficient of variation.
            if (var / n).sqrt() >= MIN_SPREAD {
                e = (cov / var).clamp(0.0, 2.0);
            }
        }
        let predicted: f64 = pairs.iter().map(|p| if p.0 > 0.0 { p.0.powf(e) } else { 0.0 }).sum();
        let observed: f64 = pairs.iter().map(|p| p.1).sum();
        Power { k: if predicted > 0.0 { observed / predicted } else { 1.0 }, e }
    }
}

/// What a step puts out for what it takes in, as the calibration runs
/// showed: within the range of their inputs, a line between nodes on a
/// log-log scale (each node the mean of the invocations of about one size:
/// a word table's growth bends over a 64× range of chunk sizes, which one
/// power misses by 10–20%); outside it, a [`Power`] fitted to all.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Curve {
    power: Power,
    /// (ln x, ln y), ascending in x.
    nodes: Vec<(f64, f64)>,
    /// The inputs' range, ln x: the nodes' end segments reach its ends.
    range: (f64, f64),
}

impl Curve {
    /// Output as much as input.
    pub(crate) fn identity() -> Curve {
        Curve { power: Power::IDENTITY, nodes: Vec::new(), range: (0.0, 0.0) }
    }

    /// Fits (input, output) pairs.
    pub(crate) fn fit(pairs: &[(f64, f64)]) -> Curve {
        let power = Power::fit(pairs);
        let mut logs: Vec<(f64, f64)> =
            pairs.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).map(|p| (p.0.ln(), p.1.ln())).collect();
        logs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut nodes = Vec::new();
        let range = (logs.first().map_or(0.0, |p| p.0), logs.last().map_or(0.0, |p| p.0));
        if let (Some(first), Some(last)) = (logs.first(), logs.last())
            && last.0 - first.0 >= MIN_SPREAD
        {
            // Bins of equal width in ln x; a node per bin with inputs.
            let width = (last.0 - first.0) / NODES as f64;
            let mut bin: Vec<(f64, f64)> = Vec::new();
            let mut edge = first.0 + width;
            for &p in &logs {
                if p.0 > edge && !bin.is_empty() {
                    nodes.push(mean(&bin));
                    bin.clear();
                    edge = first.0 + width * ((p.0 - first.0) / width).ceil().max(1.0);
                }
                bin.push(p);
            }
            nodes.push(mean(&bin));
        }
        Curve { power, nodes, range }
    }

    /// The output for an input of `x`.
    pub(crate) fn at(&self, x: f64) -> f64 {
        let n = &self.nodes;
        if n.len() < 2 || x <= 0.0 {
            return self.power.at(x);
        }
        let lx = x.ln();
        if lx < self.range.0 || lx > self.range.1 {
            return self.power.at(x);
        }
        let i = n.partition_point(|p| p.0 < lx).clamp(1, n.len() - 1);
        let ((x0, y0), (x1, y1)) = (n[i - 1], n[i]);
        (y0 + (y1 - y0) * (lx - x0) / (x1 - x0)).exp()
    }
}

fn mean(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_a_power_of_the_inputs_when_the_inputs_vary() {
        // A vocabulary that grows as the square root of the text.
        let pairs: Vec<(f64, f64)> = [1e4, 4e4, 1.6e5, 6.4e5].iter().map(|&x| (x, 10.0 * f64::sqrt(x))).collect();
        let p = Power::fit(&pairs);
        assert!((p.e - 0.5).abs() < 1e-9 && (p.at(2.56e6) - 16_000.0).abs() < 1e-6, "{p:?}");
        // Inputs of one size: proportional, with the observed total.
        let p = Power::fit(&[(1000.0, 300.0), (1010.0, 310.0), (0.0, 0.0)]);
        assert_eq!(p.e, 1.0);
        assert!((p.at(2010.0) - 610.0).abs() < 1e-9, "{p:?}");
        // Nothing out: nothing predicted.
        assert_eq!(Power::fit(&[(1000.0, 0.0), (4000.0, 0.0)]).at(5000.0), 0.0);
    }

    #[test]
    fn a_curve_follows_a_bend_one_power_misses() {
        // Output grows as x^0.8 up to 256 KiB, then as x^0.4: one power
        // through both misses the ends; the curve does not, and past the
        // range it goes on as the power does.
        let f = |x: f64| if x <= 262_144.0 { x.powf(0.8) } else { 262_144f64.powf(0.8) * (x / 262_144.0).powf(0.4) };
        let pairs: Vec<(f64, f64)> =
            (0..64).map(|i| 65_536.0 * 64f64.powf(f64::from(i) / 63.0)).map(|x| (x, f(x))).collect();
        let c = Curve::fit(&pairs);
        let p = Power::fit(&pairs);
        for x in [65_536.0, 300_000.0, 1_048_576.0, 4_194_304.0] {
            assert!((c.at(x) / f(x) - 1.0).abs() < 0.02, "{x}: {} for {}", c.at(x), f(x));
        }
        assert!((p.at(65_536.0) / f(65_536.0) - 1.0).abs() > 0.1, "one power fits: no bend to test");
        assert_eq!(c.at(1e9), p.at(1e9));
        // Inputs of one size: the power (proportional).
        let c = Curve::fit(&[(1000.0, 300.0), (1010.0, 310.0)]);
        assert!((c.at(2010.0) - 610.0).abs() < 1e-9);
        assert_eq!(Curve::identity().at(5.0), 5.0);
    }
}
