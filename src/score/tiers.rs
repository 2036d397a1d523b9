//! `tiers.toml` (SPEC 2.4): score clamping and the score → tier mapping.

use serde::Deserialize;
use toml::Spanned;

use super::runtime::Points;

/// The tier a contact gets when no `tiers.toml` exists.
pub const DEFAULT_TIER: &str = "scored";
/// The default name of the disqualified tier.
pub const DEFAULT_DISQUALIFIED_TIER: &str = "disqualified";
/// The tier of a score below every threshold when no catch-all tier exists.
pub const NO_TIER: &str = "none";

#[derive(Debug, Clone, PartialEq)]
pub struct Tiers {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub disqualified_tier: String,
    /// Tiers with a threshold, highest first.
    thresholds: Vec<(String, f64)>,
    catch_all: Option<String>,
}

impl Default for Tiers {
    /// No `tiers.toml`: no clamping, one tier `scored`.
    fn default() -> Self {
        Self {
            min: None,
            max: None,
            disqualified_tier: DEFAULT_DISQUALIFIED_TIER.to_owned(),
            thresholds: Vec::new(),
            catch_all: Some(DEFAULT_TIER.to_owned()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersFile {
    #[serde(default)]
    score: ScoreSection,
    /// Also accepted at the top level, before `[score]`.
    disqualified_tier: Option<String>,
    #[serde(default)]
    tiers: Vec<TierEntry>,
}

// Spans, so that a value that parses but makes no sense is reported at its
// line like a syntax error.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScoreSection {
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    /// Where SPEC 2.4's example puts it: after `[score]`, so inside that table.
    disqualified_tier: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierEntry {
    name: Spanned<String>,
    min_score: Option<Spanned<f64>>,
}

/// A `tiers.toml` problem, with the line and column when TOML gives one.
#[derive(Debug, Clone, PartialEq)]
pub struct TiersError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Tiers {
    pub fn parse(text: &str) -> Result<Self, TiersError> {
        let file: TiersFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            TiersError {
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        let invalid_at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            TiersError {
                line,
                column,
                message,
            }
        };
        let disqualified_tier = file
            .score
            .disqualified_tier
            .or(file.disqualified_tier)
            .unwrap_or_else(|| DEFAULT_DISQUALIFIED_TIER.to_owned());
        for (key, bound) in [("min", &file.score.min), ("max", &file.score.max)] {
            if let Some(bound) = bound
                && !bound.get_ref().is_finite()
            {
                return Err(invalid_at(
                    bound.span(),
                    format!("[score] {key} must be a finite number"),
                ));
            }
        }
        if let (Some(min), Some(max)) = (&file.score.min, &file.score.max)
            && min.get_ref() > max.get_ref()
        {
            return Err(invalid_at(
                max.span(),
                format!(
                    "[score] min ({}) is greater than max ({})",
                    min.get_ref(),
                    max.get_ref()
                ),
            ));
        }
        let mut thresholds: Vec<(String, f64)> = Vec::new();
        let mut catch_all = None;
        let mut seen = std::collections::HashSet::new();
        for tier in file.tiers {
            let name_span = tier.name.span();
            let name = tier.name.into_inner();
            if name.trim().is_empty() {
                return Err(invalid_at(
                    name_span,
                    "a [[tiers]] entry has an empty name".into(),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(invalid_at(name_span, format!("tier {name:?} is defined twice")));
            }
            match tier.min_score {
                Some(min) if !min.get_ref().is_finite() => {
                    return Err(invalid_at(
                        min.span(),
                        format!("tier {name:?}: min_score must be finite"),
                    ));
                }
                Some(min) => {
                    let value = *min.get_ref();
                    // Two tiers on one threshold would leave the file's order
                    // to decide, and SPEC 2.4 says the order does not matter.
                    if let Some((other, _)) = thresholds.iter().find(|(_, m)| *m == value) {
                        return Err(invalid_at(
                            min.span(),
                            format!(
                                "tiers {other:?} and {name:?} both have min_score {value}; each tier needs its own threshold"
                            ),
                        ));
                    }
                    thresholds.push((name, value));
                }
                None if catch_all.is_some() => {
                    return Err(invalid_at(
                        name_span,
                        format!(
                            "tiers {:?} and {name:?} both have no min_score; only one tier may catch every lower score",
                            catch_all.unwrap_or_default(),
                        ),
                    ));
                }
                None => catch_all = Some(name),
            }
        }
        thresholds.sort_by(|a, b| b.1.total_cmp(&a.1));
        if thresholds.is_empty() && catch_all.is_none() {
            catch_all = Some(DEFAULT_TIER.to_owned());
        }
        Ok(Self {
            min: file.score.min.map(Spanned::into_inner),
            max: file.score.max.map(Spanned::into_inner),
            disqualified_tier,
            thresholds,
            catch_all,
        })
    }

    /// Clamps a score to `[min, max]`; an integer score stays an integer
    /// when the bound it meets is a whole number.
    pub fn clamp(&self, score: Points) -> Points {
        let value = score.as_f64();
        let bound = match (self.min, self.max) {
            (Some(min), _) if value < min => min,
            (_, Some(max)) if value > max => max,
            _ => return score,
        };
        match score {
            Points::Int(_) if bound.fract() == 0.0 && bound.abs() < 9.0e15 => Points::Int(bound as i64),
            _ => Points::Float(bound),
        }
    }

    /// The tier of a (clamped) score: the highest threshold it reaches.
    pub fn tier_for(&self, score: Points) -> &str {
        let value = score.as_f64();
        self.thresholds
            .iter()
            .find(|(_, min)| value >= *min)
            .map(|(name, _)| name.as_str())
            .or(self.catch_all.as_deref())
            .unwrap_or(NO_TIER)
    }

    /// The tiers no score within `[min, max]` can reach, each with why
    /// (`leadscore lint`). A threshold tier covers `[min_score, next higher
    /// threshold)`, the catch-all tier everything below the lowest threshold.
    pub fn unreachable(&self) -> Vec<(String, String)> {
        let (low, high) = (
            self.min.unwrap_or(f64::NEG_INFINITY),
            self.max.unwrap_or(f64::INFINITY),
        );
        let bounds = || format!("the score bounds [{}, {}]", show(self.min), show(self.max));
        let mut found = Vec::new();
        let mut above = f64::INFINITY; // the next higher threshold
        for (name, threshold) in &self.thresholds {
            let lowest_score = threshold.max(low);
            if lowest_score > high {
                found.push((
                    name.clone(),
                    format!("its min_score {threshold} is above {}", bounds()),
                ));
            } else if lowest_score >= above {
                found.push((
                    name.clone(),
                    format!(
                        "every score of {} that reaches its min_score {threshold} reaches a higher tier's",
                        bounds()
                    ),
                ));
            }
            above = above.min(*threshold);
        }
        if let Some(name) = &self.catch_all
            && low >= above
        {
            found.push((
                name.clone(),
                format!(
                    "it takes scores below {above}, and {} start at {}",
                    bounds(),
                    show(self.min)
                ),
            ));
        }
        found
    }

    /// Every tier name a result can carry, highest first.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.thresholds.iter().map(|(n, _)| n.clone()).collect();
        names.extend(self.catch_all.clone());
        if self.catch_all.is_none() {
            names.push(NO_TIER.to_owned());
        }
        names.push(self.disqualified_tier.clone());
        names
    }
}

impl Points {
    pub fn as_f64(self) -> f64 {
        match self {
            Points::Int(i) => i as f64,
            Points::Float(f) => f,
        }
    }
}

/// A score bound as `tiers.toml` gives it; `none` when it has none.
fn show(bound: Option<f64>) -> String {
    bound.map_or_else(|| "none".to_owned(), |b| b.to_string())
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable(text: &str) -> Vec<String> {
        Tiers::parse(text)
            .unwrap()
            .unreachable()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn tiers_out_of_the_score_bounds_are_unreachable() {
        let tiers = |min: &str, max: &str, rest: &str| format!("[score]\nmin = {min}\nmax = {max}\n{rest}");
        let three = "[[tiers]]\nname = \"hot\"\nmin_score = 70\n[[tiers]]\nname = \"warm\"\nmin_score = 40\n[[tiers]]\nname = \"cold\"\n";
        assert!(unreachable(&tiers("0", "100", three)).is_empty());
        assert_eq!(unreachable(&tiers("0", "60", three)), ["hot"]);
        assert_eq!(
            unreachable(&tiers("0", "70", three)),
            Vec::<String>::new(),
            "70 itself is hot"
        );
        // Every score is at least 40: cold is never given.
        assert_eq!(unreachable(&tiers("40", "100", three)), ["cold"]);
        // Every score is at least 75: warm and cold are never given.
        assert_eq!(unreachable(&tiers("75", "100", three)), ["warm", "cold"]);
        // Without bounds every tier is reachable.
        assert!(unreachable(three).is_empty());
    }

    const SPEC_TIERS: &str = r#"
[score]
min = 0
max = 100

disqualified_tier = "disqualified"

[[tiers]]
name = "cold"

[[tiers]]
name = "hot"
min_score = 70

[[tiers]]
name = "warm"
min_score = 40
"#;

    #[test]
    fn thresholds_pick_the_highest_reached_tier_whatever_the_file_order() {
        let tiers = Tiers::parse(SPEC_TIERS).unwrap();
        assert_eq!(tiers.tier_for(Points::Int(100)), "hot");
        assert_eq!(tiers.tier_for(Points::Int(70)), "hot");
        assert_eq!(tiers.tier_for(Points::Float(69.5)), "warm");
        assert_eq!(tiers.tier_for(Points::Int(40)), "warm");
        assert_eq!(tiers.tier_for(Points::Int(39)), "cold");
        assert_eq!(tiers.tier_for(Points::Int(-50)), "cold");
        assert_eq!(tiers.names(), ["hot", "warm", "cold", "disqualified"]);
    }

    #[test]
    fn clamping_keeps_integers_integers() {
        let tiers = Tiers::parse(SPEC_TIERS).unwrap();
        assert_eq!(tiers.clamp(Points::Int(135)), Points::Int(100));
        assert_eq!(tiers.clamp(Points::Int(-5)), Points::Int(0));
        assert_eq!(tiers.clamp(Points::Float(100.5)), Points::Float(100.0));
        assert_eq!(tiers.clamp(Points::Int(55)), Points::Int(55));
        let fractional = Tiers::parse("[score]\nmax = 9.5\n").unwrap();
        assert_eq!(fractional.clamp(Points::Int(10)), Points::Float(9.5));
    }

    #[test]
    fn defaults_and_alternatives() {
        let none = Tiers::default();
        assert_eq!(none.tier_for(Points::Int(-1000)), "scored");
        assert_eq!(none.clamp(Points::Int(1000)), Points::Int(1000));
        let top_level =
            Tiers::parse("disqualified_tier = \"junk\"\n[[tiers]]\nname = \"a\"\nmin_score = 1\n").unwrap();
        assert_eq!(top_level.disqualified_tier, "junk");
        assert_eq!(top_level.tier_for(Points::Int(0)), NO_TIER);
        assert_eq!(Tiers::parse("").unwrap().tier_for(Points::Int(3)), "scored");
    }

    #[test]
    fn errors_name_the_line() {
        let err = Tiers::parse("[score]\nmin = 0\nmax = \"a lot\"\n").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        let err = Tiers::parse("[[tiers]]\nname = \"a\"\n[[tiers]]\nname = \"b\"\n").unwrap_err();
        assert!(err.message.contains("only one tier"), "{err:?}");
        let err = Tiers::parse("[[tiers]]\nname = \"a\"\nmin_scroe = 3\n").unwrap_err();
        assert!(err.message.contains("min_scroe"), "{err:?}");
        // Values that parse but make no sense are reported at their line too.
        let err = Tiers::parse("[score]\nmin = 10\nmax = 5\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 7), "{err:?}");
        assert!(err.message.contains("greater than max"), "{err:?}");
        let err = Tiers::parse("[score]\nmin = nan\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
        assert!(err.message.contains("finite"), "{err:?}");
        let err = Tiers::parse("[[tiers]]\nname = \"a\"\n[[tiers]]\nname = \"a\"\n").unwrap_err();
        assert_eq!(err.line, 4, "{err:?}");
        assert!(err.message.contains("defined twice"), "{err:?}");
    }

    #[test]
    fn two_tiers_on_one_threshold_are_refused() {
        // The file's order would decide between them (SPEC 2.4: it must not).
        let text =
            "[[tiers]]\nname = \"warm\"\nmin_score = 70\n\n[[tiers]]\nname = \"hot\"\nmin_score = 70\n";
        let err = Tiers::parse(text).unwrap_err();
        assert_eq!((err.line, err.column), (7, 13), "{err:?}");
        assert!(
            err.message
                .contains("\"warm\" and \"hot\" both have min_score 70"),
            "{err:?}"
        );
        // Equal as numbers counts too.
        let text = "[[tiers]]\nname = \"a\"\nmin_score = 40\n[[tiers]]\nname = \"b\"\nmin_score = 40.0\n";
        assert!(Tiers::parse(text).is_err());
    }
}
