//! Placeholder until the grammar lands.

/// One extension in a `Sec-WebSocket-Extensions` header: its name and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParams {
    /// The extension's name.
    pub name: String,
    /// The parameters, in order; a parameter without a value has `None`.
    pub params: Vec<(String, Option<String>)>,
}
