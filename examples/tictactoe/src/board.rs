//! The rules: a 3 × 3 board, X moves first, three in a row wins, a full board is a draw.

/// One of the two players' marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    X,
    O,
}

impl Mark {
    pub(crate) fn other(self) -> Mark {
        match self {
            Mark::X => Mark::O,
            Mark::O => Mark::X,
        }
    }

    pub(crate) fn as_char(self) -> char {
        match self {
            Mark::X => 'X',
            Mark::O => 'O',
        }
    }
}

/// How a game stands after a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The other player's turn.
    Next(Mark),
    Won(Mark),
    Draw,
}

/// Why a move is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MoveError {
    NotYourTurn,
    NoSuchCell,
    Taken,
    Over,
}

impl MoveError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            MoveError::NotYourTurn => "not your turn",
            MoveError::NoSuchCell => "cell must be 0 to 8",
            MoveError::Taken => "cell already taken",
            MoveError::Over => "the game is over",
        }
    }
}

const LINES: [[usize; 3]; 8] = [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8],
    [0, 3, 6],
    [1, 4, 7],
    [2, 5, 8],
    [0, 4, 8],
    [2, 4, 6],
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Board {
    cells: [Option<Mark>; 9],
    outcome: Outcome,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            cells: [None; 9],
            outcome: Outcome::Next(Mark::X),
        }
    }
}

impl Board {
    /// `mark` takes `cell` (0 to 8, row by row).
    pub(crate) fn play(&mut self, mark: Mark, cell: usize) -> Result<Outcome, MoveError> {
        match self.outcome {
            Outcome::Next(next) if next == mark => {}
            Outcome::Next(_) => return Err(MoveError::NotYourTurn),
            Outcome::Won(_) | Outcome::Draw => return Err(MoveError::Over),
        }
        let slot = self.cells.get_mut(cell).ok_or(MoveError::NoSuchCell)?;
        if slot.is_some() {
            return Err(MoveError::Taken);
        }
        *slot = Some(mark);
        let won = LINES
            .iter()
            .any(|line| line.iter().all(|&i| self.cells[i] == Some(mark)));
        self.outcome = if won {
            Outcome::Won(mark)
        } else if self.cells.iter().all(Option::is_some) {
            Outcome::Draw
        } else {
            Outcome::Next(mark.other())
        };
        Ok(self.outcome)
    }

    /// The board as nine characters, `X`, `O` or `.`, row by row.
    pub(crate) fn render(&self) -> String {
        self.cells
            .iter()
            .map(|cell| cell.map_or('.', Mark::as_char))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_in_a_row_wins_and_ends_the_game() {
        let mut board = Board::default();
        for (mark, cell) in [(Mark::X, 0), (Mark::O, 3), (Mark::X, 1), (Mark::O, 4)] {
            assert!(matches!(board.play(mark, cell), Ok(Outcome::Next(_))));
        }
        assert_eq!(board.play(Mark::X, 2), Ok(Outcome::Won(Mark::X)));
        assert_eq!(board.render(), "XXXOO....");
        assert_eq!(board.play(Mark::O, 5), Err(MoveError::Over));
    }

    #[test]
    fn refusals_and_draw() {
        let mut board = Board::default();
        assert_eq!(board.play(Mark::O, 0), Err(MoveError::NotYourTurn));
        assert_eq!(board.play(Mark::X, 9), Err(MoveError::NoSuchCell));
        board.play(Mark::X, 4).ok();
        assert_eq!(board.play(Mark::O, 4), Err(MoveError::Taken));
        let mut draw = Board::default();
        let mut mark = Mark::X;
        for cell in [0, 1, 2, 4, 3, 5, 7, 6, 8] {
            let outcome = draw.play(mark, cell);
            mark = mark.other();
            if cell == 8 {
                assert_eq!(outcome, Ok(Outcome::Draw));
            }
        }
    }
}
