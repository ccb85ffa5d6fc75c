//! `tagged_enum!`: enums that read as `{ kind = "...", field = ... }` tables in TOML/JSON
//! and as compact variant indices in bincode.

/// Declares an enum whose human-readable serde form is internally tagged by `kind`
/// (snake_case variant names, or the name after `as` with `|`-separated aliases) and whose binary form is serde's default (variant index).
macro_rules! tagged_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident $( as $tag:literal $( | $alias:literal )* )? $( { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? } )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(remote = "Self")]
        $vis enum $name {
            $( $(#[$vmeta])* $variant $( { $( $(#[$fmeta])* $field : $fty ),* } )? ),*
        }

        const _: () = {
            #[derive(serde::Serialize, serde::Deserialize)]
            #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
            enum Tagged {
                $( $( #[serde(rename = $tag $( , alias = $alias )* )] )? $variant $( { $( $(#[$fmeta])* $field : $fty ),* } )? ),*
            }

            impl serde::Serialize for $name {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    if s.is_human_readable() {
                        let tagged = match self.clone() {
                            $( $name::$variant $( { $( $field ),* } )? => Tagged::$variant $( { $( $field ),* } )? ),*
                        };
                        serde::Serialize::serialize(&tagged, s)
                    } else {
                        $name::serialize(self, s)
                    }
                }
            }

            impl<'de> serde::Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    if d.is_human_readable() {
                        let tagged = <Tagged as serde::Deserialize>::deserialize(d)?;
                        Ok(match tagged {
                            $( Tagged::$variant $( { $( $field ),* } )? => $name::$variant $( { $( $field ),* } )? ),*
                        })
                    } else {
                        $name::deserialize(d)
                    }
                }
            }
        };
    };
}

pub(crate) use tagged_enum;
