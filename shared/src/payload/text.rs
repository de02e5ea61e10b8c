use bytes::{BufMut, Bytes, BytesMut};

use crate::error::PayloadError;

/// One text-output atom: a formatting string (`%s` and `%%` only), labels
/// and arguments (§4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextAtom {
    /// The formatting string.
    pub format: String,
    /// Labels (ASCII) for styling.
    pub labels: Vec<String>,
    /// Arguments, one per `%s`.
    pub args: Vec<String>,
}

impl TextAtom {
    /// An atom with no labels and no arguments. `%` is escaped.
    pub fn plain(text: &str) -> Self {
        TextAtom {
            format: text.replace('%', "%%"),
            labels: Vec::new(),
            args: Vec::new(),
        }
    }

    /// The text with arguments substituted.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.format.len());
        let mut args = self.args.iter();
        let mut chars = self.format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('s') => out.push_str(args.next().map_or("", String::as_str)),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }

    fn check(&self) -> Result<(), String> {
        let mut wanted = 0usize;
        let mut chars = self.format.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('s') => wanted += 1,
                    Some('%') => {}
                    _ => return Err("only %s and %% are formatters".into()),
                }
            }
        }
        if wanted != self.args.len() {
            return Err(format!("{wanted} %s for {} arguments", self.args.len()));
        }
        if self.labels.iter().any(|l| !l.is_ascii()) {
            return Err("labels must be ASCII".into());
        }
        Ok(())
    }
}

/// Encodes atoms into one text-output payload.
pub fn encode_atoms(atoms: &[TextAtom]) -> Result<Bytes, PayloadError> {
    let mut buf = BytesMut::new();
    for atom in atoms {
        atom.check()
            .map_err(|e| PayloadError::new("text-output", e))?;
        let too_long = || PayloadError::new("text-output", "atom field too long");
        let fmt_len = u16::try_from(atom.format.len()).map_err(|_| too_long())?;
        let label_count = u8::try_from(atom.labels.len()).map_err(|_| too_long())?;
        let arg_count = u8::try_from(atom.args.len()).map_err(|_| too_long())?;
        buf.put_u16_le(fmt_len);
        buf.put_u8(label_count);
        buf.put_u8(arg_count);
        for label in &atom.labels {
            buf.put_u8(u8::try_from(label.len()).map_err(|_| too_long())?);
        }
        for arg in &atom.args {
            buf.put_u16_le(u16::try_from(arg.len()).map_err(|_| too_long())?);
        }
        buf.put_slice(atom.format.as_bytes());
        for label in &atom.labels {
            buf.put_slice(label.as_bytes());
        }
        for arg in &atom.args {
            buf.put_slice(arg.as_bytes());
        }
    }
    Ok(buf.freeze())
}

/// Decodes a text-output payload into atoms. An empty payload (keepalive)
/// gives no atoms.
pub fn decode_atoms(payload: &[u8]) -> Result<Vec<TextAtom>, PayloadError> {
    let mut cursor = Cursor { rest: payload };
    let mut atoms = Vec::new();
    while !cursor.rest.is_empty() {
        let &[f0, f1, label_count, arg_count] = cursor.take(4)? else {
            return Err(Cursor::cut_off());
        };
        let fmt_len = usize::from(u16::from_le_bytes([f0, f1]));
        let label_lens: Vec<usize> = cursor
            .take(usize::from(label_count))?
            .iter()
            .map(|&l| usize::from(l))
            .collect();
        let arg_lens: Vec<usize> = cursor
            .take(2 * usize::from(arg_count))?
            .chunks_exact(2)
            .map(|c| {
                usize::from(u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ]))
            })
            .collect();
        let format = cursor.text(fmt_len)?;
        let labels = label_lens
            .into_iter()
            .map(|len| cursor.text(len))
            .collect::<Result<_, _>>()?;
        let args = arg_lens
            .into_iter()
            .map(|len| cursor.text(len))
            .collect::<Result<_, _>>()?;
        let atom = TextAtom {
            format,
            labels,
            args,
        };
        atom.check()
            .map_err(|e| PayloadError::new("text-output", e))?;
        atoms.push(atom);
    }
    Ok(atoms)
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn cut_off() -> PayloadError {
        PayloadError::new("text-output", "atom cut off")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        if self.rest.len() < n {
            return Err(Self::cut_off());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn text(&mut self, n: usize) -> Result<String, PayloadError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| PayloadError::new("text-output", "not UTF-8"))
    }
}
