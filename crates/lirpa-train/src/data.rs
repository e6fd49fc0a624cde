//! Labelled data from CSV: a header line, then one sample per line, its features (the
//! model input, flattened row-major) and its integer label last.

use std::io::Read;
use std::path::Path;

/// Files larger than this are refused before they are read.
const MAX_BYTES: u64 = 1 << 30;

/// A data set: `len()` samples of `features` values each.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub features: usize,
    /// Row-major `len × features`.
    pub x: Vec<f32>,
    pub labels: Vec<usize>,
}

/// A data file that cannot be used, naming the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path}: larger than {MAX_BYTES} bytes")]
    TooLarge { path: String },
    #[error("{path}, line {line}: {msg}")]
    Line { path: String, line: usize, msg: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Rows `range` of the data set.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Dataset {
        let f = self.features;
        Dataset {
            features: f,
            x: self.x[range.start * f..range.end * f].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }

    /// Read a CSV file (see the module documentation).
    pub fn load_csv(path: &Path) -> Result<Dataset, DataError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|err| DataError::Io { path: shown.clone(), err })?;
        let mut text = String::new();
        file.take(MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|err| DataError::Io { path: shown.clone(), err })?;
        if text.len() as u64 > MAX_BYTES {
            return Err(DataError::TooLarge { path: shown });
        }
        Self::parse(&text, &shown)
    }

    /// Parse CSV text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Dataset, DataError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) =
            lines.next().ok_or_else(|| DataError::File { path: name.into(), msg: "empty file".into() })?;
        let columns = header.split(',').count();
        if columns < 2 {
            return Err(DataError::Line {
                path: name.into(),
                line: 1,
                msg: "the header names fewer than 2 columns".into(),
            });
        }
        let features = columns - 1;
        let (mut x, mut labels) = (Vec::new(), Vec::new());
        for (i, line) in lines {
            let err = |msg: String| DataError::Line { path: name.into(), line: i + 1, msg };
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != columns {
                return Err(err(format!("{} columns, the header has {columns}", cells.len())));
            }
            for c in &cells[..features] {
                let v: f32 = c.parse().map_err(|_| err(format!("'{c}' is not a number")))?;
                if !v.is_finite() {
                    return Err(err(format!("'{c}' is not finite")));
                }
                x.push(v);
            }
            let label = cells[features];
            let y: usize =
                label.parse().map_err(|_| err(format!("label '{label}' is not a non-negative integer")))?;
            if y > 1 << 20 {
                return Err(err(format!("label {y} is too large")));
            }
            labels.push(y);
        }
        if labels.is_empty() {
            return Err(DataError::File { path: name.into(), msg: "no data rows".into() });
        }
        Ok(Dataset { features, x, labels })
    }
}

#[cfg(test)]
mod tests {
    use super::Dataset;

    #[test]
    fn parses_and_names_bad_lines() {
        let d = Dataset::parse("a,b,label\n0.5,1,3\n0,0.25,0\n", "t.csv").unwrap();
        assert_eq!((d.features, d.len(), d.labels.clone(), d.x[1]), (2, 2, vec![3, 0], 1.0));
        let e = Dataset::parse("a,b,label\n0.5,1,3\n0,x,0\n", "t.csv").unwrap_err().to_string();
        assert_eq!(e, "t.csv, line 3: 'x' is not a number");
        let e = Dataset::parse("a,b,label\n0.5,1\n", "t.csv").unwrap_err().to_string();
        assert_eq!(e, "t.csv, line 2: 2 columns, the header has 3");
        let e = Dataset::parse("a,b,label\n0.5,1,-1\n", "t.csv").unwrap_err().to_string();
        assert!(e.contains("label '-1'"), "{e}");
        assert!(Dataset::parse("", "t.csv").is_err());
        assert!(Dataset::parse("a,label\n", "t.csv").is_err());
    }
}
