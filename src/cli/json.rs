//! `--json`: one JSON object per command on stdout, for scripts and tests;
//! the objects are the library's views (`relaysync::service`).

/// Prints `view` as one line.
pub fn print(view: &impl serde::Serialize) {
    match serde_json::to_string(view) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("error: cannot write the JSON view: {e}"),
    }
}
