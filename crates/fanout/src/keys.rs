//! Key and channel names.

/// The names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The mailbox stream of a client.
    pub fn mailbox(&self, client_id: &str) -> String {
        format!("{}:results:{client_id}", self.prefix)
    }

    /// The key holding the channel of a client's home gateway.
    pub fn home(&self, client_id: &str) -> String {
        format!("{}:home:{client_id}", self.prefix)
    }

    /// The key holding the delivered cursor of a client (shared between gateways).
    pub fn delivered(&self, client_id: &str) -> String {
        format!("{}:delivered:{client_id}", self.prefix)
    }

    /// The channel of gateway `gateway_id`.
    pub fn channel(&self, gateway_id: &str) -> String {
        format!("{}:gateway:{gateway_id}", self.prefix)
    }
}
