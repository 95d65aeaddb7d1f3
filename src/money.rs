//! Money: integer minor units plus an ISO 4217 currency code. Never a float.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units (cents for USD).
    pub amount: i64,
    /// Lower-case ISO 4217 code, as Stripe writes it: `usd`, `eur`.
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: &str) -> Result<Self, String> {
        let currency = currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(format!("{currency:?} is not a three-letter currency code"));
        }
        Ok(Self { amount, currency })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_checked_and_lowercased() {
        assert_eq!(
            Money::new(1234, "USD").unwrap(),
            Money {
                amount: 1234,
                currency: "usd".into()
            }
        );
        assert!(Money::new(1, "dollars").is_err());
        assert_eq!(
            serde_json::to_value(Money::new(5, "eur").unwrap()).unwrap(),
            serde_json::json!({"amount": 5, "currency": "eur"})
        );
    }
}
