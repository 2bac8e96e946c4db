//! The golden events of `schemas/fixtures/`: hand-written specifications of each payload's exact
//! body, kept with the contract so every crate's tests compare against the same text.

/// The golden body of event `event_name` (`CustomerChangeEvent`, ...), minified: the exact record
/// body the contract specifies. `None` for a name without a golden file.
pub fn golden_body(event_name: &str) -> Option<String> {
    let text = match event_name {
        "CustomerChangeEvent" => include_str!("../fixtures/CustomerChangeEvent.json"),
        "FulfillmentRequestEvent" => include_str!("../fixtures/FulfillmentRequestEvent.json"),
        "OrderStatusChangeEvent" => include_str!("../fixtures/OrderStatusChangeEvent.json"),
        _ => return None,
    };
    Some(minified(text))
}

/// `json` without the whitespace between its tokens; strings (which may hold spaces) and the
/// text of numbers are kept as written.
pub fn minified(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}
