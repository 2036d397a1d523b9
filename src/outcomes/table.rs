//! The outcomes report and a backtest's comparison against outcomes as
//! text for a terminal: every rate beside its counts, rates as percentages
//! with two decimals (the JSON's precision), and groups of fewer than
//! [`SMALL_GROUP`] contacts flagged with `*`: their rate is noise.

use std::fmt::Write as _;

use super::{BacktestOutcomes, OutcomeReport, SMALL_GROUP, Split, Verdict, number};

const LEGEND: &str = "* fewer than 30 contacts: the rate is noise";

/// `leadscore report`'s table.
pub fn format_table(report: &OutcomeReport) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "Outcomes of {} contact{} first seen since {}",
        report.contacts,
        if report.contacts == 1 { "" } else { "s" },
        report.since
    );
    let _ = writeln!(
        w,
        "{} booked, {} with an outcome, {} open; {} sale{} ({}), revenue {}",
        report.booked,
        report.with_outcome,
        report.open,
        report.sales,
        if report.sales == 1 { "" } else { "s" },
        percent(report.sale_rate),
        number(report.revenue)
    );
    let mut flagged = false;
    let mut flag = |name: &str, contacts: u64| {
        if contacts > 0 && contacts < SMALL_GROUP {
            flagged = true;
            format!("{name} *")
        } else {
            name.to_owned()
        }
    };

    let _ = writeln!(w, "\nTIERS (lift: the tier's sale rate over the overall one)");
    let rows: Vec<Vec<String>> = report
        .tiers
        .iter()
        .map(|t| {
            vec![
                flag(&t.tier, t.contacts),
                t.contacts.to_string(),
                t.booked.to_string(),
                t.with_outcome.to_string(),
                t.sales.to_string(),
                percent(t.sale_rate),
                number(t.revenue).to_string(),
                percent(t.share_of_sales),
                lift(t.lift),
            ]
        })
        .collect();
    table(
        w,
        &[
            "TIER",
            "CONTACTS",
            "BOOKED",
            "OUTCOME",
            "SALES",
            "SALE RATE",
            "REVENUE",
            "SHARE OF SALES",
            "LIFT",
        ],
        1,
        rows,
    );
    let top = &report.top_tier;
    let _ = writeln!(
        w,
        "top tier {}: {} of the contacts, {} of the sales",
        top.tier,
        percent(top.share_of_contacts),
        percent(top.share_of_sales)
    );

    let splits = [
        (
            "REASONS (by lift: sale rate with the reason over the rate without)",
            ["RULE", "REASON"],
            report
                .reasons
                .iter()
                .map(|r| (vec![r.rule.clone(), r.reason.clone()], &r.split))
                .collect::<Vec<_>>(),
        ),
        (
            "TAGS (by lift)",
            ["TAG", ""],
            report
                .tags
                .iter()
                .map(|t| (vec![t.tag.clone()], &t.split))
                .collect(),
        ),
        (
            "DISQUALIFICATIONS (by lift)",
            ["RULE", ""],
            report
                .disqualifications
                .iter()
                .map(|d| (vec![d.rule.clone()], &d.split))
                .collect(),
        ),
    ];
    for (title, names, list) in splits {
        let _ = writeln!(w, "\n{title}");
        if list.is_empty() {
            let _ = writeln!(w, "none");
            continue;
        }
        let width = list[0].0.len();
        let mut header: Vec<&str> = names[..width].to_vec();
        header.extend(["CONTACTS", "SALES", "WITH", "WITHOUT", "LIFT"]);
        let rows = list
            .into_iter()
            .map(|(mut cells, split)| {
                let last = cells.len() - 1;
                cells[last] = flag(&cells[last], split.contacts);
                cells.extend(split_cells(split));
                cells
            })
            .collect();
        table(w, &header, width, rows);
    }

    let _ = writeln!(w, "\nDECILES (contacts by score, lowest first)");
    if report.deciles.is_empty() {
        let _ = writeln!(w, "none");
    } else {
        let rows = report
            .deciles
            .iter()
            .map(|d| {
                vec![
                    flag(
                        &format!("{}–{}", number(d.min_score), number(d.max_score)),
                        d.contacts,
                    ),
                    d.contacts.to_string(),
                    d.sales.to_string(),
                    percent(d.sale_rate),
                ]
            })
            .collect();
        table(w, &["SCORES", "CONTACTS", "SALES", "SALE RATE"], 1, rows);
    }
    if flagged {
        let _ = writeln!(w, "\n{LEGEND}");
    }
    out
}

/// The "Against outcomes" block of a backtest's table.
pub fn format_against(outcomes: &BacktestOutcomes) -> String {
    let mut out = String::new();
    let w = &mut out;
    let k = outcomes.baseline.equal_volume.k;
    let _ = writeln!(
        w,
        "AGAINST OUTCOMES (equal volume: each side's {k} highest-scored contacts, the size of the baseline's top tier)"
    );
    let rows = [
        ("baseline", &outcomes.baseline),
        ("candidate", &outcomes.candidate),
    ]
    .into_iter()
    .map(|(name, side)| {
        let top = side.tiers.first();
        vec![
            name.to_owned(),
            top.map_or_else(|| "-".to_owned(), |t| t.tier.clone()),
            top.map_or(0, |t| t.contacts).to_string(),
            top.map_or(0, |t| t.sales).to_string(),
            percent(top.and_then(|t| t.sale_rate)),
            side.equal_volume.sales.to_string(),
            number(side.equal_volume.revenue).to_string(),
        ]
    })
    .collect();
    table(
        w,
        &[
            "SIDE",
            "TOP TIER",
            "CONTACTS",
            "SALES",
            "SALE RATE",
            "TOP-K SALES",
            "TOP-K REVENUE",
        ],
        2,
        rows,
    );
    let (b, c) = (&outcomes.baseline.equal_volume, &outcomes.candidate.equal_volume);
    let verdict = match outcomes.verdict() {
        Verdict::Better => format!(
            "better: the candidate's top {k} hold {} more sale(s)",
            c.sales - b.sales
        ),
        Verdict::Worse => format!(
            "worse: the candidate's top {k} hold {} fewer sale(s)",
            b.sales - c.sales
        ),
        Verdict::Same => format!("same: both sides' top {k} hold {} sale(s)", c.sales),
    };
    let _ = writeln!(w, "{verdict}");
    if k < SMALL_GROUP {
        let _ = writeln!(
            w,
            "k is under {SMALL_GROUP}: a difference of a sale or two is noise"
        );
    }
    out
}

fn split_cells(split: &Split) -> [String; 5] {
    [
        split.contacts.to_string(),
        split.sales.to_string(),
        percent(split.sale_rate_with),
        percent(split.sale_rate_without),
        lift(split.lift),
    ]
}

/// A rate as a percentage with two decimals; `-` when there is none.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.2} %", r * 100.0))
}

fn lift(lift: Option<f64>) -> String {
    lift.map_or_else(|| "-".to_owned(), |l| format!("{l:.2}"))
}

/// Columns padded to their widest cell: the first `left` (names)
/// left-aligned, the others (numbers) right-aligned.
fn table(w: &mut String, header: &[&str], left: usize, rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |w: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            let pad = width - cell.chars().count();
            if i > 0 {
                text.push_str("  ");
            }
            match i < left {
                true => text.push_str(&format!("{cell}{}", " ".repeat(pad))),
                false => text.push_str(&format!("{}{cell}", " ".repeat(pad))),
            }
        }
        let _ = writeln!(w, "{}", text.trim_end());
    };
    line(w, &mut header.iter().copied());
    for row in &rows {
        line(w, &mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    #[test]
    fn the_table_shows_counts_beside_rates_and_flags_small_groups() {
        let mut rows: Vec<ContactOutcome> = (0..40u64)
            .map(|i| ContactOutcome {
                contact_key: i.to_string(),
                first_seen: 0,
                score: i as f64,
                tier: if i >= 35 { "hot" } else { "cold" }.to_owned(),
                disqualified: false,
                reasons: vec![("10-role.rhai".into(), "Decision maker".into())],
                tags: Vec::new(),
                disqualified_by: Vec::new(),
                booked: i % 2 == 0,
                with_outcome: i % 4 == 0,
                converted: i % 8 == 0,
                revenue: if i % 8 == 0 { 1000.0 } else { 0.0 },
            })
            .collect();
        rows[0].tags = vec!["vip".into()];
        let tiers = crate::score::Tiers::parse(
            "[[tiers]]\nname = \"hot\"\nmin_score = 35\n[[tiers]]\nname = \"cold\"\n",
        )
        .unwrap();
        let text = format_table(&report(&rows, &tiers, "2026-01-01T00:00:00.000Z".into()));
        assert!(
            text.starts_with("Outcomes of 40 contacts first seen since 2026-01-01T00:00:00.000Z\n"),
            "{text}"
        );
        assert!(
            text.contains("20 booked, 10 with an outcome, 30 open; 5 sales (12.50 %), revenue 5000"),
            "{text}"
        );
        // hot: ids 35..39 (5 contacts, 1 sale: 0 is cold); flagged.
        let hot = text.lines().find(|l| l.starts_with("hot *")).expect(&text);
        let cells: Vec<&str> = hot.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "hot", "*", "5", "2", "1", "0", "0.00", "%", "0", "0.00", "%", "0.00"
            ]
        );
        let cold = text.lines().find(|l| l.starts_with("cold ")).expect(&text);
        assert!(!cold.contains('*'), "35 contacts are not flagged: {cold}");
        assert!(
            text.contains("top tier hot: 12.50 % of the contacts, 0.00 % of the sales"),
            "{text}"
        );
        // Every contact has the reason: nobody without it, so no lift.
        let reason = text.lines().find(|l| l.starts_with("10-role.rhai")).expect(&text);
        assert!(
            reason.ends_with("40      5  12.50 %        -     -"),
            "{reason:?}"
        );
        assert!(text.contains("vip *"), "{text}");
        assert!(text.contains("\nDISQUALIFICATIONS (by lift)\nnone\n"), "{text}");
        assert!(text.contains("0–3 *"), "{text}");
        assert!(text.ends_with(&format!("\n{LEGEND}\n")), "{text}");
    }

    #[test]
    fn the_backtest_block_says_better_worse_or_same() {
        let side = |sales: u64| SideOutcomes {
            tiers: Vec::new(),
            equal_volume: EqualVolume {
                k: 40,
                sales,
                revenue: sales as f64 * 100.0,
            },
        };
        let text = |b: u64, c: u64| {
            format_against(&BacktestOutcomes {
                baseline: side(b),
                candidate: side(c),
            })
        };
        assert!(text(3, 5).contains("better: the candidate's top 40 hold 2 more sale(s)"));
        assert!(text(5, 3).contains("worse: the candidate's top 40 hold 2 fewer sale(s)"));
        assert!(text(4, 4).contains("same: both sides' top 40 hold 4 sale(s)"));
        let block = text(3, 5);
        let candidate = block.lines().find(|l| l.starts_with("candidate")).unwrap();
        assert!(candidate.ends_with("5            500"), "{block}");
    }
}
