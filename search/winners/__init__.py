"""What is done with a winner: exported as a versioned document, carried to another member of
its family under the constraints it was found under, trained in full (its run folder)."""
