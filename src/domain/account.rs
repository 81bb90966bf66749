//! Seed 004: a bank account whose balance never goes negative (I6).

use serde::{Deserialize, Serialize};

use crate::decider::{Aggregate, CodecError, Decider, EncodedEvent, json};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountCommand {
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub balance: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRejection {
    ZeroAmount,
    InsufficientFunds { balance: u64, requested: u64 },
    BalanceOverflow,
}

/// The account decider.
#[derive(Debug)]
pub struct Account;

impl Decider for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type State = AccountState;
    type Rejection = AccountRejection;

    fn initial() -> AccountState {
        AccountState::default()
    }

    fn decide(
        state: &AccountState,
        command: &AccountCommand,
    ) -> Result<Vec<AccountEvent>, AccountRejection> {
        match *command {
            AccountCommand::Deposit { amount: 0 } | AccountCommand::Withdraw { amount: 0 } => {
                Err(AccountRejection::ZeroAmount)
            }
            AccountCommand::Deposit { amount } => {
                state
                    .balance
                    .checked_add(amount)
                    .ok_or(AccountRejection::BalanceOverflow)?;
                Ok(vec![AccountEvent::Deposited { amount }])
            }
            AccountCommand::Withdraw { amount } if amount > state.balance => {
                Err(AccountRejection::InsufficientFunds {
                    balance: state.balance,
                    requested: amount,
                })
            }
            AccountCommand::Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
        match *event {
            AccountEvent::Deposited { amount } => AccountState {
                balance: state.balance + amount,
            },
            AccountEvent::Withdrawn { amount } => AccountState {
                balance: state
                    .balance
                    .checked_sub(amount)
                    .expect("a stored withdrawal never exceeds the balance (I6)"),
            },
        }
    }
}

impl Aggregate for Account {
    const SNAPSHOT_SCHEMA: u32 = 1;

    fn encode_event(event: &AccountEvent) -> EncodedEvent {
        let (event_type, payload) = json::encode_event(event);
        EncodedEvent {
            event_type,
            tags: Vec::new(),
            payload,
        }
    }

    fn decode_event(event_type: &str, payload: &[u8]) -> Result<AccountEvent, CodecError> {
        json::decode_event(event_type, payload)
    }

    fn encode_state(state: &AccountState) -> Vec<u8> {
        json::encode(state)
    }

    fn decode_state(bytes: &[u8]) -> Result<AccountState, CodecError> {
        json::decode("account state", bytes)
    }
}

#[cfg(test)]
mod tests {
    //! The account's rules, decided purely.
    use super::*;

    #[test]
    fn withdrawing_more_than_the_balance_is_rejected() {
        let state = Account::fold(&[AccountEvent::Deposited { amount: 100 }]);
        assert_eq!(
            Account::decide(&state, &AccountCommand::Withdraw { amount: 101 }),
            Err(AccountRejection::InsufficientFunds {
                balance: 100,
                requested: 101
            })
        );
        assert_eq!(
            Account::decide(&state, &AccountCommand::Withdraw { amount: 100 }),
            Ok(vec![AccountEvent::Withdrawn { amount: 100 }])
        );
    }

    #[test]
    fn events_round_trip_through_the_codec() {
        for event in [
            AccountEvent::Deposited { amount: 7 },
            AccountEvent::Withdrawn { amount: 3 },
        ] {
            let encoded = Account::encode_event(&event);
            assert_eq!(
                Account::decode_event(&encoded.event_type, &encoded.payload),
                Ok(event)
            );
        }
    }
}
