"""Drawing helpers shared by the pages (the turn view and what it is made of); not pages themselves."""
