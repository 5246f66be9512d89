//! Frames as a person reads them.

use serde_json::Value;

const TOOL_INPUT_CHARS: usize = 120;
const TOOL_RESULT_CHARS: usize = 300;

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ⏎ ");
    match one_line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

pub fn frame(frame: &Value) {
    let data = &frame["data"];
    match (frame["kind"].as_str().unwrap_or(""), frame["subtype"].as_str()) {
        ("system", Some("init")) => println!(
            "● session {} · model {} · {}",
            data["session_id"].as_str().unwrap_or("?"),
            data["model"].as_str().unwrap_or("?"),
            data["cwd"].as_str().unwrap_or("")
        ),
        ("assistant", _) => {
            for block in data["message"]["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => println!("{}", block["text"].as_str().unwrap_or("")),
                    Some("tool_use") => println!(
                        "→ {}({})",
                        block["name"].as_str().unwrap_or("tool"),
                        shorten(&block["input"].to_string(), TOOL_INPUT_CHARS)
                    ),
                    Some("thinking") => println!("  (thinking)"),
                    _ => {}
                }
            }
        }
        ("user", _) => {
            for block in data["message"]["content"].as_array().into_iter().flatten() {
                if block["type"] != "tool_result" {
                    continue;
                }
                let content = match &block["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => {
                        items.iter().filter_map(|i| i["text"].as_str()).collect::<Vec<_>>().join(" ")
                    }
                    other => other.to_string(),
                };
                let mark = if block["is_error"] == true { "✘" } else { "←" };
                println!("  {mark} {}", shorten(&content, TOOL_RESULT_CHARS));
            }
        }
        ("result", subtype) => {
            let turns = data["num_turns"].as_u64().unwrap_or(0);
            let cost = data["total_cost_usd"].as_f64().unwrap_or(0.0);
            if subtype == Some("success") && data["is_error"] != true {
                // The result text repeats the last assistant message, already printed.
                println!("✔ done in {turns} turns, ${cost:.4}");
            } else {
                println!(
                    "✘ {} after {turns} turns, ${cost:.4}: {}",
                    subtype.unwrap_or("error"),
                    data["result"].as_str().unwrap_or("")
                );
            }
        }
        ("end", _) => println!("■ run {}", frame["status"].as_str().unwrap_or("ended")),
        ("raw", _) => println!("  {}", data["line"].as_str().unwrap_or("")),
        (kind, _) => println!("  [{kind}]"),
    }
}
