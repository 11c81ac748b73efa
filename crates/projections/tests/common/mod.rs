//! What the projection tests share.

use ledger_projections::{Change, DocumentReads, Error};

/// Reads that count the scans and the documents they found, to see what a reader spares.
pub(crate) struct Counted<'a> {
    pub(crate) reads: Box<dyn DocumentReads + 'a>,
    pub(crate) scans: usize,
    pub(crate) scanned: usize,
}

impl<'a> Counted<'a> {
    pub(crate) fn new(reads: Box<dyn DocumentReads + 'a>) -> Self {
        Self {
            reads,
            scans: 0,
            scanned: 0,
        }
    }
}

impl DocumentReads for Counted<'_> {
    fn get(&mut self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.reads.get(model, key)
    }

    fn scan_range(
        &mut self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let found = self.reads.scan_range(model, from, until)?;
        self.scans += 1;
        self.scanned += found.len();
        Ok(found)
    }

    fn changes_with(
        &mut self,
        model: &str,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Change>>, Error> {
        self.reads.changes_with(model, tenant, after, limit)
    }
}
