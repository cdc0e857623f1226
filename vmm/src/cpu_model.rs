//! The one CPU model every detvm guest sees, on every host and backend (DESIGN point 4).
