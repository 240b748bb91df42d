//! Host functions: typed Rust closures the guest calls by name.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a host function answers the guest (becomes a `HostReply`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostOutcome {
    /// postcard-encoded result.
    Return(Vec<u8>),
    /// The arguments did not decode as the parameters.
    BadArguments,
    /// The function failed; the message goes to the guest.
    Failed(String),
}

/// A host function with its types erased: postcard arguments in, outcome
/// out.
pub(crate) type ErasedHostFunction = Box<dyn FnMut(&[u8]) -> HostOutcome + Send>;

/// Closures usable as host functions: `Fn(A, B, ..) -> R` with up to six
/// `DeserializeOwned` parameters and a `Serialize` result. `Args` is the
/// parameter tuple (inferred).
pub trait HostFunction<Args>: Send + 'static {
    /// Erases the types.
    #[doc(hidden)]
    fn erase(self) -> ErasedHostFunction;
}

macro_rules! host_function_arity {
    ($($arg:ident),*) => {
        impl<F, R, $($arg),*> HostFunction<($($arg,)*)> for F
        where
            F: FnMut($($arg),*) -> R + Send + 'static,
            R: Serialize,
            $($arg: DeserializeOwned,)*
        {
            fn erase(mut self) -> ErasedHostFunction {
                Box::new(move |bytes: &[u8]| {
                    #[allow(non_snake_case, unused_parens)]
                    let Ok(($($arg,)*)) = postcard::from_bytes::<($($arg,)*)>(bytes) else {
                        return HostOutcome::BadArguments;
                    };
                    let result = self($($arg),*);
                    match postcard::to_allocvec(&result) {
                        Ok(bytes) => HostOutcome::Return(bytes),
                        Err(error) => HostOutcome::Failed(format!("encoding the result: {error}")),
                    }
                })
            }
        }
    };
}

host_function_arity!();
host_function_arity!(A);
host_function_arity!(A, B);
host_function_arity!(A, B, C);
host_function_arity!(A, B, C, D);
host_function_arity!(A, B, C, D, E);
host_function_arity!(A, B, C, D, E, G);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closure_adds_through_postcard() {
        let mut add = (|a: i64, b: i64| a + b).erase();
        let args = postcard::to_allocvec(&(2i64, 40i64)).unwrap();
        assert_eq!(
            add(&args),
            HostOutcome::Return(postcard::to_allocvec(&42i64).unwrap())
        );
        assert_eq!(add(&[]), HostOutcome::BadArguments);
    }
}
