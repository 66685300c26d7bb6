import streamlit as st

st.title("trajectories")
