//! The Stripe objects opsdeck reads, typed as far as the MRR engine and the payment figures
//! need them and no further. Every field Stripe may omit, null or change across API versions
//! is optional or defaulted, so an object from another version still parses; the raw JSON is
//! stored beside the parsed form, so nothing is lost.

use serde::Deserialize;

use super::client::HasId;

/// A field Stripe sends either as an id or, with `expand[]`, as the object itself.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

impl<T: HasId> Expandable<T> {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Object(o) => o.id(),
        }
    }

    pub fn object(&self) -> Option<&T> {
        match self {
            Self::Id(_) => None,
            Self::Object(o) => Some(o),
        }
    }
}

/// An embedded list (`items`, `lines`): the first page of it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Embedded<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

impl<T> Default for Embedded<T> {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            has_more: false,
        }
    }
}

macro_rules! has_id {
    ($($t:ty),*) => {
        $(impl HasId for $t {
            fn id(&self) -> &str {
                &self.id
            }
        })*
    };
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Product {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub created: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Recurring {
    pub interval: String,
    #[serde(default = "one")]
    pub interval_count: u32,
    /// `licensed` or `metered`.
    #[serde(default)]
    pub usage_type: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PriceTier {
    /// A number, or null for the last (`"inf"`) tier.
    #[serde(default)]
    pub up_to: Option<u64>,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    #[serde(default)]
    pub unit_amount_decimal: Option<String>,
    #[serde(default)]
    pub flat_amount: Option<i64>,
    #[serde(default)]
    pub flat_amount_decimal: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TransformQuantity {
    pub divide_by: u64,
    /// `up` or `down`.
    pub round: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub product: Option<Expandable<Product>>,
    pub currency: String,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    #[serde(default)]
    pub unit_amount_decimal: Option<String>,
    /// `per_unit` or `tiered`.
    #[serde(default)]
    pub billing_scheme: Option<String>,
    /// `graduated` or `volume`.
    #[serde(default)]
    pub tiers_mode: Option<String>,
    #[serde(default)]
    pub tiers: Option<Vec<PriceTier>>,
    #[serde(default)]
    pub recurring: Option<Recurring>,
    #[serde(default)]
    pub transform_quantity: Option<TransformQuantity>,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub lookup_key: Option<String>,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub created: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Coupon {
    pub id: String,
    #[serde(default)]
    pub amount_off: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub percent_off: Option<f64>,
    /// `once`, `repeating` or `forever`.
    pub duration: String,
    #[serde(default)]
    pub duration_in_months: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DiscountSource {
    #[serde(default)]
    pub coupon: Option<Expandable<Coupon>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Discount {
    pub id: String,
    /// Where API versions up to 2025-08 put the coupon.
    #[serde(default)]
    pub coupon: Option<Coupon>,
    /// Where later versions put it.
    #[serde(default)]
    pub source: Option<DiscountSource>,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: Option<i64>,
}

impl Discount {
    pub fn coupon(&self) -> Option<&Coupon> {
        self.coupon.as_ref().or_else(|| {
            self.source
                .as_ref()
                .and_then(|s| s.coupon.as_ref())
                .and_then(|c| c.object())
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SubscriptionItem {
    pub id: String,
    pub price: Price,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub discounts: Vec<Expandable<Discount>>,
    /// Here since 2025-03-31 (basil); on the subscription before.
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PauseCollection {
    #[serde(default)]
    pub behavior: Option<String>,
    #[serde(default)]
    pub resumes_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub customer: Expandable<Customer>,
    pub status: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub start_date: Option<i64>,
    #[serde(default)]
    pub trial_start: Option<i64>,
    #[serde(default)]
    pub trial_end: Option<i64>,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub cancel_at: Option<i64>,
    #[serde(default)]
    pub pause_collection: Option<PauseCollection>,
    #[serde(default)]
    pub items: Embedded<SubscriptionItem>,
    #[serde(default)]
    pub discounts: Vec<Expandable<Discount>>,
    /// Pre-basil only; items carry their own since.
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

impl Subscription {
    /// The current period's end, wherever this API version put it.
    pub fn current_period_end(&self) -> Option<i64> {
        self.items
            .data
            .iter()
            .filter_map(|i| i.current_period_end)
            .max()
            .or(self.current_period_end)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DiscountAmount {
    pub amount: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct InvoiceLine {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub period: Option<Period>,
    #[serde(default)]
    pub discount_amounts: Vec<DiscountAmount>,
    /// Pre-basil: the price object.
    #[serde(default)]
    pub price: Option<Price>,
    /// Basil on: `pricing.price_details.price` (an id).
    #[serde(default)]
    pub pricing: Option<serde_json::Value>,
    /// Pre-basil.
    #[serde(default)]
    pub proration: bool,
    /// Basil on: `parent.subscription_item_details.proration`.
    #[serde(default)]
    pub parent: Option<serde_json::Value>,
}

impl InvoiceLine {
    pub fn is_proration(&self) -> bool {
        self.proration
            || self
                .parent
                .as_ref()
                .and_then(|p| {
                    p.get("subscription_item_details")?
                        .get("proration")?
                        .as_bool()
                })
                .unwrap_or(false)
    }

    pub fn price_id(&self) -> Option<&str> {
        self.price.as_ref().map(|p| p.id.as_str()).or_else(|| {
            self.pricing
                .as_ref()?
                .get("price_details")?
                .get("price")?
                .as_str()
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable<Customer>>,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub amount_paid: i64,
    #[serde(default)]
    pub amount_due: i64,
    #[serde(default)]
    pub billing_reason: Option<String>,
    /// Pre-basil.
    #[serde(default)]
    pub subscription: Option<Expandable<Subscription>>,
    /// Basil on: `parent.subscription_details.subscription`.
    #[serde(default)]
    pub parent: Option<serde_json::Value>,
    #[serde(default)]
    pub lines: Embedded<InvoiceLine>,
    #[serde(default)]
    pub attempt_count: u32,
}

impl Invoice {
    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription.as_ref().map(|s| s.id()).or_else(|| {
            self.parent
                .as_ref()?
                .get("subscription_details")?
                .get("subscription")?
                .as_str()
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable<Customer>>,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    #[serde(default)]
    pub refunded: bool,
    #[serde(default)]
    pub disputed: bool,
    #[serde(default)]
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    #[serde(default)]
    pub balance_transaction: Option<Expandable<BalanceTransaction>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Refund {
    pub id: String,
    #[serde(default)]
    pub charge: Option<Expandable<Charge>>,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Dispute {
    pub id: String,
    pub charge: Expandable<Charge>,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    /// `won`, `lost`, `needs_response`, …
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable<Customer>>,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BalanceTransaction {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub fee: i64,
    #[serde(default)]
    pub net: i64,
    pub currency: String,
    #[serde(default)]
    pub exchange_rate: Option<f64>,
    #[serde(default)]
    pub created: i64,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EventData {
    pub object: serde_json::Value,
    #[serde(default)]
    pub previous_attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub livemode: bool,
}

has_id!(
    Customer,
    Product,
    Price,
    Coupon,
    Discount,
    SubscriptionItem,
    Subscription,
    InvoiceLine,
    Invoice,
    Charge,
    Refund,
    Dispute,
    PaymentIntent,
    BalanceTransaction,
    Event
);
