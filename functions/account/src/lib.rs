//! `account`: a bank account that cannot be overdrawn.
//!
//! The state is `{"balance": int}`, 0 for a new process. `Deposit {"amount": int}` adds
//! a positive amount; `Withdraw {"amount": int}` takes a positive amount out unless that
//! would overdraw the account. Both reply the new balance as a JSON integer.

use julato_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The state of an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// What the account holds.
    pub balance: i64,
}

/// Puts money in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct Deposit {
    /// How much; must be positive.
    pub amount: i64,
}

/// Takes money out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct Withdraw {
    /// How much; must be positive and at most the balance.
    pub amount: i64,
}

/// Adds the deposit to the balance and replies the new balance.
///
/// # Errors
///
/// [`HandlerError::Rejected`] if the amount is not positive or the balance would
/// overflow.
#[handler]
pub fn deposit(event: Deposit, state: Account, ctx: &mut Context) -> Result<Account, HandlerError> {
    let amount = positive("deposit", event.amount)?;
    let balance = state.balance.checked_add(amount).ok_or_else(|| {
        HandlerError::rejected(format!("a deposit of {amount} overflows the balance"))
    })?;
    ctx.reply(balance);
    Ok(Account { balance })
}

/// Takes the withdrawal from the balance and replies the new balance.
///
/// # Errors
///
/// [`HandlerError::Rejected`] if the amount is not positive, or exceeds the balance
/// (insufficient funds).
#[handler]
pub fn withdraw(
    event: Withdraw,
    state: Account,
    ctx: &mut Context,
) -> Result<Account, HandlerError> {
    let amount = positive("withdrawal", event.amount)?;
    if amount > state.balance {
        ctx.warn(format!("refused a withdrawal of {amount} from a balance of {}", state.balance));
        return Err(HandlerError::rejected(format!(
            "insufficient funds: balance {}, withdrawal {amount}",
            state.balance
        )));
    }
    let balance = state.balance - amount;
    ctx.reply(balance);
    Ok(Account { balance })
}

fn positive(what: &str, amount: i64) -> Result<i64, HandlerError> {
    if amount > 0 {
        Ok(amount)
    } else {
        Err(HandlerError::rejected(format!("a {what} amount must be positive, not {amount}")))
    }
}

julato_sdk::function! {
    state: Account = Account::default(),
    handlers: [deposit, withdraw],
}

#[cfg(test)]
mod tests {
    use super::*;
    use julato_sdk::ContextInfo;

    fn handle(event_type: &str, json: &str, state: &str) -> Result<(String, String), HandlerError> {
        let payload = Payload::Json(json.into());
        let outcome = FUNCTION.handle(ContextInfo::default(), event_type, payload, state)?;
        Ok((outcome.state, outcome.reply.expect("a reply")))
    }

    #[test]
    fn starts_empty() {
        assert_eq!(FUNCTION.init_json().unwrap(), r#"{"balance":0}"#);
        assert_eq!(FUNCTION.event_types(), ["Deposit", "Withdraw"]);
    }

    #[test]
    fn deposits_and_withdrawals_reply_the_balance() {
        let (state, reply) = handle("Deposit", r#"{"amount":100}"#, r#"{"balance":0}"#).unwrap();
        assert_eq!((state.as_str(), reply.as_str()), (r#"{"balance":100}"#, "100"));
        let (state, reply) = handle("Withdraw", r#"{"amount":30}"#, &state).unwrap();
        assert_eq!((state.as_str(), reply.as_str()), (r#"{"balance":70}"#, "70"));
        let (state, _) = handle("Withdraw", r#"{"amount":70}"#, &state).unwrap();
        assert_eq!(state, r#"{"balance":0}"#);
    }

    #[test]
    fn overdraft_is_rejected() {
        let error = handle("Withdraw", r#"{"amount":71}"#, r#"{"balance":70}"#).unwrap_err();
        assert_eq!(
            error,
            HandlerError::Rejected("insufficient funds: balance 70, withdrawal 71".into())
        );
    }

    #[test]
    fn amounts_must_be_positive() {
        for event_type in ["Deposit", "Withdraw"] {
            for amount in ["0", "-5"] {
                let json = format!(r#"{{"amount":{amount}}}"#);
                let error = handle(event_type, &json, r#"{"balance":10}"#).unwrap_err();
                assert!(matches!(error, HandlerError::Rejected(_)), "{error:?}");
            }
        }
    }

    #[test]
    fn malformed_events_and_states() {
        let error = handle("Deposit", r#"{"amount":"ten"}"#, r#"{"balance":0}"#).unwrap_err();
        assert!(matches!(error, HandlerError::InvalidEvent(_)), "{error:?}");
        let error = handle("Deposit", r#"{"amount":1}"#, "7").unwrap_err();
        assert!(matches!(error, HandlerError::InvalidState(_)), "{error:?}");
        let error = handle("Transfer", "{}", r#"{"balance":0}"#).unwrap_err();
        assert_eq!(error, HandlerError::UnsupportedEventType("Transfer".into()));
    }
}
