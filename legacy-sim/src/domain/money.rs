//! Money: `rust_decimal` amounts with at most two decimal places that fit `numeric(14, 2)`.
//!
//! On the wire money is a JSON number. Input must be a number (a string is a wrong type);
//! output is the shortest number that reads back as the same decimal (`12.5` for 12.50). Both are
//! exact: a `numeric(14, 2)` has at most 14 significant digits and an `f64` round-trips 15.

use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer};

use super::ValidationError;

/// The smallest amount that no longer fits `numeric(14, 2)`.
const LIMIT: Decimal = Decimal::from_parts(0x107A_4000, 0x5AF3, 0, false, 2); // 1_000_000_000_000.00

/// A validated amount, always carried with scale 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(Decimal);

impl Amount {
    /// An amount >= 0 (a credit limit may be zero).
    pub fn non_negative(value: Decimal) -> Result<Self, ValidationError> {
        Self::checked(value, false)
    }

    /// An amount > 0 (an order total).
    pub fn positive(value: Decimal) -> Result<Self, ValidationError> {
        Self::checked(value, true)
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    fn checked(value: Decimal, strictly_positive: bool) -> Result<Self, ValidationError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(ValidationError::new(
                "invalid_amount",
                "amount must not be negative",
            ));
        }
        if strictly_positive && value.is_zero() {
            return Err(ValidationError::new(
                "invalid_amount",
                "amount must be greater than zero",
            ));
        }
        if value.normalize().scale() > 2 {
            return Err(ValidationError::new(
                "invalid_amount",
                "amount must have at most 2 decimal places",
            ));
        }
        if value >= LIMIT {
            return Err(ValidationError::new(
                "invalid_amount",
                "amount must be below 1000000000000",
            ));
        }
        let mut value = value;
        // No "-0.00" in payloads.
        value.set_sign_positive(true);
        value.rescale(2);
        Ok(Self(value))
    }
}

/// Serde glue for `Decimal` fields: `#[serde(with = "money::json")]`.
pub mod json {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        match value.to_f64() {
            Some(number) => serializer.serialize_f64(number),
            None => Err(serde::ser::Error::custom("amount out of range")),
        }
    }

    /// Accepts JSON numbers only; integers are exact, fractions go through their shortest decimal
    /// representation (Rust's `f64` display never uses an exponent).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        let parsed = if let Some(int) = number.as_i64() {
            Some(Decimal::from(int))
        } else if let Some(uint) = number.as_u64() {
            Some(Decimal::from(uint))
        } else {
            number
                .as_f64()
                .and_then(|float| Decimal::from_str(&float.to_string()).ok())
        };
        parsed.ok_or_else(|| serde::de::Error::custom("amount is not a representable decimal number"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dec(value: &str) -> Decimal {
        Decimal::from_str(value).unwrap()
    }

    #[test]
    fn limit_is_one_trillion() {
        assert_eq!(LIMIT, dec("1000000000000.00"));
    }

    #[test]
    fn amounts_are_rescaled_to_two_places() {
        assert_eq!(
            Amount::positive(dec("12.5")).unwrap().value().to_string(),
            "12.50"
        );
        assert_eq!(
            Amount::non_negative(dec("7")).unwrap().value().to_string(),
            "7.00"
        );
        assert_eq!(
            Amount::positive(dec("1.230")).unwrap().value().to_string(),
            "1.23"
        );
    }

    #[test]
    fn zero_is_a_valid_credit_limit_but_not_an_order_total() {
        assert!(Amount::non_negative(Decimal::ZERO).is_ok());
        assert_eq!(
            Amount::non_negative(dec("-0.00")).unwrap().value().to_string(),
            "0.00"
        );
        assert_eq!(
            Amount::positive(Decimal::ZERO).unwrap_err().code,
            "invalid_amount"
        );
    }

    #[test]
    fn negative_fractional_and_huge_amounts_are_rejected() {
        assert!(Amount::non_negative(dec("-0.01")).is_err());
        assert!(Amount::positive(dec("0.001")).is_err());
        assert!(Amount::positive(dec("1000000000000")).is_err());
        assert!(Amount::positive(dec("999999999999.99")).is_ok());
    }

    #[derive(Debug, serde::Deserialize, serde::Serialize)]
    struct Wire {
        #[serde(with = "json")]
        amount: Decimal,
    }

    #[test]
    fn json_accepts_numbers_only() {
        let parse = |text: &str| serde_json::from_str::<Wire>(text).map(|wire| wire.amount);
        assert_eq!(parse(r#"{"amount": 12}"#).unwrap(), dec("12"));
        assert_eq!(parse(r#"{"amount": 0.1}"#).unwrap(), dec("0.1"));
        assert_eq!(
            parse(r#"{"amount": 999999999999.99}"#).unwrap(),
            dec("999999999999.99")
        );
        assert_eq!(parse(r#"{"amount": -3.5}"#).unwrap(), dec("-3.5"));
        assert!(parse(r#"{"amount": "12.00"}"#).is_err());
        assert!(parse(r#"{"amount": null}"#).is_err());
        assert!(parse(r#"{"amount": 1e300}"#).is_err());
    }

    #[test]
    fn json_writes_the_shortest_exact_number() {
        let text = serde_json::to_string(&Wire { amount: dec("12.50") }).unwrap();
        assert_eq!(text, r#"{"amount":12.5}"#);
        let text = serde_json::to_string(&Wire {
            amount: dec("999999999999.99"),
        })
        .unwrap();
        assert_eq!(text, r#"{"amount":999999999999.99}"#);
    }
}
