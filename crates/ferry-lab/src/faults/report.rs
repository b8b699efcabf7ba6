//! The campaign's table: one row per fault, its notes and full audit below it.

use super::{Report, plan};

/// Prints the table.
pub fn print(r: &Report) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header([
            "FAULT",
            "KILLED",
            "FAILED/REQ",
            "LONGEST GAP",
            "RECOVERED",
            "NEXT CHANGE",
            "AUDIT",
            "TARGET",
            "PASS",
        ]);
    let s = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.2} s"));
    for row in &r.rows {
        let tr = &row.traffic;
        let mut failed = format!("{}/{}", tr.failed, tr.requests);
        if !tr.failed_by_flow.is_empty() {
            let by: Vec<String> = tr
                .failed_by_flow
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            failed.push_str(&format!(" ({})", by.join(", ")));
        }
        if tr.failed_during_abort > 0 {
            failed.push_str(&format!(
                ", {} during an unrelated vswitchd abort",
                tr.failed_during_abort
            ));
        }
        let mut recovered = s(row.recovery_s);
        if let Some(m) = tr.eip_moved_s.filter(|_| row.class == plan::Class::Gateway) {
            recovered.push_str(&format!(" (EIP moved {m:.2} s)"));
        }
        let change = match (row.change_acked_s, row.change_programmed_s) {
            (Some(a), Some(p)) => format!("{p:.2} s (acked +{a:.2} s)"),
            (Some(a), None) => format!("never (acked +{a:.2} s)"),
            _ => "not acked".into(),
        };
        let audit = match row.audit.as_slice() {
            [] => format!("clean after {}", s(row.audit_clean_after_s)),
            [a] => a.clone(),
            [a, rest @ ..] => format!("{a} (+{} more, see below)", rest.len()),
        };
        let pass = match row.misses.as_slice() {
            [] => "yes".to_string(),
            m => format!(
                "NO: {}",
                m.iter()
                    .map(|x| if x.starts_with("audit: ") {
                        "audit"
                    } else {
                        x.as_str()
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        t.add_row([
            row.name.clone(),
            row.target.clone(),
            failed,
            format!("{:.2} s", tr.longest_gap_s),
            recovered,
            change,
            audit,
            plan::target_text(row.class),
            pass,
        ]);
    }
    println!("{t}");
    for row in &r.rows {
        for n in &row.notes {
            println!("note: {}: {n}", row.name);
        }
        if row.audit.len() > 1 {
            println!("audit: {}: {}", row.name, row.audit.join("; "));
        }
    }
    if !r.baseline_audit.is_empty() {
        println!("baseline audit: {}", r.baseline_audit.join("; "));
    }
    println!(
        "ovs-vswitchd aborted {} time(s) on its own during the campaign",
        r.vswitchd_aborts
    );
}
