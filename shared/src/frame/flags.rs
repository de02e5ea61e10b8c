//! The flag-set newtype shared by every frame type.

/// Declares a flag-set newtype over `u8` whose `Debug` prints flag names.
macro_rules! flags {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* const $flag:ident = $value:expr, $label:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(u8);

        #[allow(dead_code)]
        impl $name {
            $( $(#[$fmeta])* pub const $flag: $name = $name($value); )*

            /// Every bit this flag set defines.
            pub const DEFINED: u8 = 0 $(| $value)*;

            /// No flag set.
            pub const fn empty() -> Self {
                $name(0)
            }

            /// The raw bits.
            pub const fn bits(self) -> u8 {
                self.0
            }

            /// Flags from raw bits; `None` if an undefined bit is set.
            pub const fn from_bits(bits: u8) -> Option<Self> {
                if bits & !Self::DEFINED == 0 { Some($name(bits)) } else { None }
            }

            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether no flag is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// Both sets together.
            pub const fn union(self, other: Self) -> Self {
                $name(self.0 | other.0)
            }

            /// This set without the flags of `other`.
            pub const fn difference(self, other: Self) -> Self {
                $name(self.0 & !other.0)
            }

            /// `flag` added if `on`.
            pub const fn with(self, flag: Self, on: bool) -> Self {
                if on { self.union(flag) } else { self }
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                self.union(rhs)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut first = true;
                $(
                    if self.contains($name::$flag) {
                        if !first { f.write_str(" | ")?; }
                        f.write_str($label)?;
                        first = false;
                    }
                )*
                if first { f.write_str("(empty)")?; }
                Ok(())
            }
        }
    };
}

pub(crate) use flags;
